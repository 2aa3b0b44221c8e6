"""The folder of one tool run: status.json goes running -> accepted / rejected / failed.

metrics.json is only ever written complete, at the end, so a crashed or refused run never leaves
anything that looks like a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Dict, Optional, Sequence

from yacs.config import CfgNode

from compressreid.config import dump_config
from compressreid.engine.io import atomic_write_json

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"


def read_status(folder: str) -> str:
    """A run folder's recorded outcome ("running", "accepted", ...); "" for folders other tools wrote."""
    path = os.path.join(folder, STATUS_FILE)
    if not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8") as handle:
        return str(json.load(handle).get("status", ""))


class RunDirectory:
    """OUTPUT_DIR of one run. Create with ``start``; close with ``finish`` or ``fail``."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.started = time.time()
        self.recorded: Dict[str, object] = {}

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def start(self, cfg: CfgNode, tool: str) -> "RunDirectory":
        os.makedirs(self.path, exist_ok=True)
        for stale in (METRICS_FILE, STATUS_FILE):  # a previous run's result must not outlive this one
            if os.path.exists(self.file(stale)):
                os.remove(self.file(stale))
        dump_config(cfg, self.file("config.yaml"))
        atomic_write_json(self.file(STATUS_FILE), {"status": "running", "tool": tool, "started": self.started})
        return self

    def record(self, metrics: Dict[str, object]) -> None:
        """Keep run-level facts (e.g. training throughput) to be written into metrics.json by ``finish``."""
        self.recorded.update(metrics)

    def finish(self, metrics: Dict[str, object], decisions: Sequence = ()) -> str:
        """Write metrics.json (``metrics``, then what was recorded) with every gate decision; status
        'accepted' or 'rejected'."""
        accepted = all(d.passed for d in decisions)
        payload = {**metrics, **{k: v for k, v in self.recorded.items() if k not in metrics}}
        payload["gates"] = [d.to_dict() for d in decisions]
        payload["accepted"] = accepted
        atomic_write_json(self.file(METRICS_FILE), payload)
        self._status("accepted" if accepted else "rejected")
        return self.file(METRICS_FILE)

    @contextlib.contextmanager
    def guard(self):
        """Record 'failed' in status.json if the body raises (a failed gate has already recorded 'rejected')."""
        from compressreid.errors import GateFailed

        try:
            yield self
        except GateFailed:
            raise
        except BaseException as exc:
            self.fail(exc)
            raise

    def fail(self, error: BaseException) -> None:
        self._status("failed", error=f"{type(error).__name__}: {error}")

    def _status(self, status: str, error: Optional[str] = None) -> None:
        record = {"status": status, "started": self.started, "seconds": round(time.time() - self.started, 2)}
        if error:
            record["error"] = error
        atomic_write_json(self.file(STATUS_FILE), record)
