"""The run manifest (OUTPUT_DIR/manifest.json): one record per stage with the hashes that decide resumption.

A stage is reused when its last record is accepted and its config hash, input checksum and output files are
unchanged; ``reuse_blocker`` says why not otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from yacs.config import CfgNode

from compressreid.engine.io import MISSING, atomic_write_json, file_sha256

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
def files_checksum(paths: Sequence[str]) -> Tuple[Dict[str, str], str]:
    """Each file's sha256 and one checksum over them in order (paths excluded, so a moved run still matches)."""
    per_file = {path: file_sha256(path) for path in paths}
    combined = hashlib.sha256("\n".join(per_file[p] for p in paths).encode()).hexdigest()
    return per_file, combined


def config_hash(cfg: CfgNode) -> str:
    """sha256 of the config's yaml dump (the derived stage config, as its config.yaml records it)."""
    return hashlib.sha256(cfg.dump().encode()).hexdigest()


@dataclass
class StageRecord:
    """One stage in the manifest.

    Attributes:
        status: "accepted", "rejected" (a gate failed), "failed" (an error), "interrupted" (a signal or Ctrl-C),
            "running" (while it runs, or left so by a killed pipeline), or "not run".
        reused: this invocation skipped the stage and kept its earlier result.
        resumed: this invocation continued the stage's interrupted (or failed) run from its last checkpoint.
        reason: why the stage ran (or why it was reused).
        outputs: artifact path relative to the stage folder -> sha256.
        metrics: the summary of its metrics.json (numbers at its top level).
        measurements: params, MACs, size on disk, latency (None where not measured).
    """

    index: int
    name: str
    config: str
    folder: str
    status: str = "not run"
    config_hash: str = ""
    inputs: Dict[str, str] = field(default_factory=dict)
    input_checksum: str = ""
    outputs: Dict[str, str] = field(default_factory=dict)
    output_checksum: str = ""
    metrics: Dict[str, object] = field(default_factory=dict)
    gates: List[Dict[str, object]] = field(default_factory=list)
    measurements: Dict[str, object] = field(default_factory=dict)
    wall_seconds: float = 0.0
    reused: bool = False
    resumed: bool = False
    reason: str = ""
    error: str = ""

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "StageRecord":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def metrics_summary(metrics: Dict[str, object]) -> Dict[str, object]:
    """The top-level numbers of a metrics.json (mAP, rank1, mINP, ...) plus what model and dataset they are of."""
    keep = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key in ("model", "dataset"):
        if isinstance(metrics.get(key), str):
            keep[key] = metrics[key]
    return keep


def output_files(folder: str, artifacts: Sequence[str]) -> Tuple[Dict[str, str], str]:
    """Checksums of a stage's artifacts, keyed by their path inside the stage folder."""
    per_file, combined = files_checksum([os.path.join(folder, a) for a in artifacts])
    return {a: per_file[os.path.join(folder, a)] for a in artifacts}, combined


def reuse_blocker(previous: Optional[StageRecord], cfg_hash: str, input_checksum: str, folder: str,
                  artifacts: Sequence[str]) -> str:
    """Why the stage must run again, or "" when its previous record can be reused."""
    if previous is None:
        return "no earlier run in the manifest"
    if previous.status not in ("accepted", "ungated"):
        return f"its last run was {previous.status}"
    if previous.config_hash != cfg_hash:
        return "its config changed"
    if previous.input_checksum != input_checksum:
        return "its input changed"
    outputs, _ = output_files(folder, artifacts)
    for name, digest in outputs.items():
        if digest != previous.outputs.get(name):
            return f"its output {name} is {'missing' if digest == MISSING else 'modified'}"
    return ""


def read_manifest(path: str) -> Dict[str, object]:
    """The manifest at ``path``, or an empty one when absent or unreadable (then every stage re-runs)."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        logger.warning("manifest %s is unreadable (%s): every stage runs again", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def previous_records(manifest: Dict[str, object]) -> Dict[Tuple[int, str], StageRecord]:
    """Earlier records by (position, name): a stage moved to another position is a different stage."""
    records = {}
    for item in manifest.get("stages", []):
        if isinstance(item, dict) and "index" in item and "name" in item:
            record = StageRecord.from_dict(item)
            records[(record.index, record.name)] = record
    return records


def write_manifest(path: str, payload: Dict[str, object]) -> str:
    """Write the manifest atomically (a crash never leaves half a manifest)."""
    return atomic_write_json(path, payload)
