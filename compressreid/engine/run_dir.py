"""The folder of one tool run: status.json goes running -> accepted / rejected / failed / interrupted.

A folder holds one run at a time (see ``run_lock``), and a run starts by clearing what an earlier run left there,
so a failed rerun never sits next to the previous run's model and plots. metrics.json is only ever written
complete, at the end, so a crashed or refused run never leaves anything that looks like a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Dict, Optional, Sequence

from yacs.config import CfgNode

from compressreid.config import dump_config
from compressreid.engine.clear import clear_previous_run
from compressreid.engine.io import atomic_write_json, ensure_writable_dir
from compressreid.engine.run_lock import FolderLock

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
        self._lock: Optional[FolderLock] = None

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def start(self, cfg: CfgNode, tool: str, resume: bool = False) -> "RunDirectory":
        """Create and lock the folder, clear the previous run's files, write config.yaml and status 'running'.

        Args:
            resume: keep the training state a resumed run continues from (checkpoint, train log, tensorboard).

        Raises:
            ConfigError: OUTPUT_DIR cannot be written, or another run holds it.
        """
        ensure_writable_dir(self.path)
        self._lock = FolderLock(self.path, tool).acquire()
        clear_previous_run(self.path, cfg, resume)
        dump_config(cfg, self.file("config.yaml"))
        atomic_write_json(self.file(STATUS_FILE), {"status": "running", "tool": tool, "started": self.started,
                                                   "pid": os.getpid()})
        return self

    def release(self) -> None:
        """Let another run use the folder (also done by ``finish``, ``fail`` and the end of ``guard``)."""
        if self._lock is not None:
            self._lock.release()

    def record(self, metrics: Dict[str, object]) -> None:
        """Keep run-level facts (e.g. training throughput) to be written into metrics.json by ``finish``."""
        self.recorded.update(metrics)

    def finish(self, metrics: Dict[str, object], decisions: Sequence = (), status: Optional[str] = None) -> str:
        """Write metrics.json (``metrics``, then what was recorded) with every gate decision and the verdict.

        Args:
            status: "accepted", "rejected" or "ungated" (compressreid.engine.verdict decides); None: accepted when
                every decision passed, else rejected.
        """
        status = status or ("accepted" if all(d.passed for d in decisions) else "rejected")
        payload = {**metrics, **{k: v for k, v in self.recorded.items() if k not in metrics}}
        payload["gates"] = [d.to_dict() for d in decisions]
        payload["accepted"] = status == "accepted"
        payload["status"] = status
        atomic_write_json(self.file(METRICS_FILE), payload)
        self._status(status)
        self.release()
        return self.file(METRICS_FILE)

    @contextlib.contextmanager
    def guard(self):
        """Record 'failed' (or 'interrupted') in status.json if the body raises (a failed gate has already
        recorded 'rejected'); the folder is released either way."""
        from compressreid.errors import GateFailed

        try:
            yield self
        except GateFailed:
            raise
        except BaseException as exc:
            self.fail(exc)
            raise
        finally:
            self.release()

    def fail(self, error: BaseException) -> None:
        """Record why the run ended early: 'interrupted' for a signal or Ctrl-C, 'failed' for anything else."""
        # KeyboardInterrupt covers SIGINT and, through compressreid.errors.Interrupted, SIGTERM
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        self._status(status, error=f"{type(error).__name__}: {error}")
        self.release()

    def _status(self, status: str, error: Optional[str] = None) -> None:
        record = {"status": status, "started": self.started, "seconds": round(time.time() - self.started, 2)}
        if error:
            record["error"] = error
        atomic_write_json(self.file(STATUS_FILE), record)
