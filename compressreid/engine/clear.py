"""Clear a reused run folder of what an earlier run wrote there, before the new run writes anything.

Only files compressreid itself writes are removed (listed here by name); anything else in the folder is the
user's and stays. A file the new run reads (its MODEL.WEIGHTS, a source run, a gate reference) stays too, even
when it has one of these names.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
from typing import List, Set

from yacs.config import CfgNode

from compressreid.engine.io import TEMP_PREFIXES

logger = logging.getLogger(__name__)

# What the tools write into OUTPUT_DIR (one list for all: a folder may be reused by another tool). The names
# are spelled out rather than imported so the engine does not depend on the layers above it: training (engine),
# distillation (distill_adapters.pth), pruning (finetune_step<k>/), quantization (quant.run: the INT8 / FP32
# graphs, model card, work/ and qat/).
RUN_FILES = ("status.json", "metrics.json", "model_final.pth", "last_checkpoint.pth", "train_log.jsonl",
             "distill_adapters.pth", "student_int8.onnx", "student_int8.rejected.onnx", "student_fp32.onnx",
             "model_card.json")
# the per-target INT8 files of quant.targets (student_int8.<target>[.rejected].onnx; BoxMOT's
# <arch>_compressreid_int8[.rejected].onnx and its .onnx.metadata.json sidecar), and the FP32 models a target ships
# where INT8 ran slower (student_fp32.<target>.onnx; BoxMOT's <arch>_compressreid_fp32.onnx and its sidecar)
RUN_FILE_PATTERNS = ("student_int8.*.onnx", "*_compressreid_int8.onnx", "*_compressreid_int8.rejected.onnx",
                     "*_compressreid_int8.onnx.metadata.json", "student_fp32.*.onnx", "*_compressreid_fp32.onnx",
                     "*_compressreid_fp32.onnx.metadata.json")
RUN_FOLDERS = ("plots", "tensorboard", "work", "qat", "finetune_step*")
# What a resumed run continues from (the train log and tensorboard are continued too, not restarted).
RESUME_STATE = ("last_checkpoint.pth", "train_log.jsonl", "tensorboard")


def input_paths(cfg: CfgNode) -> Set[str]:
    """Absolute paths of the files a run with ``cfg`` reads, which clearing must never remove."""
    paths = [cfg.MODEL.WEIGHTS, cfg.TEST.GATE_REFERENCE, *cfg.DISTILL.TEACHERS.WEIGHTS]
    for folder in (cfg.PRUNE.SOURCE, cfg.QUANT.SOURCE, *cfg.DISTILL.TEACHERS.CONFIGS):
        paths += [folder, os.path.join(folder, "model_final.pth")] if folder else []
    return {os.path.abspath(p) for p in paths if p}


def stale_entries(folder: str, resume: bool = False) -> List[str]:
    """The names in ``folder`` an earlier run wrote: its outputs, and partial files a killed write left."""
    keep = RESUME_STATE if resume else ()
    found = []
    for name in sorted(os.listdir(folder)):
        if name in keep:
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            known = any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FOLDERS)
        else:
            known = (name in RUN_FILES or name.startswith(TEMP_PREFIXES)
                     or any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FILE_PATTERNS))
        if known:
            found.append(name)
    return found


def clear_previous_run(folder: str, cfg: CfgNode, resume: bool = False) -> List[str]:
    """Remove the earlier run's outputs from ``folder`` (kept with ``resume``: its training state); returns what
    was removed."""
    protected = input_paths(cfg)
    removed = []
    for name in stale_entries(folder, resume):
        path = os.path.join(folder, name)
        if os.path.abspath(path) in protected:
            logger.warning("%s is from an earlier run in OUTPUT_DIR but this run reads it: kept", path)
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
        removed.append(name)
    if removed:
        logger.info("cleared the previous run from %s: %s", folder, ", ".join(removed))
    return removed


def clear_partial_files(folder: str) -> List[str]:
    """Remove only the partial files a killed atomic write left in ``folder`` (for folders whose other files
    outlive a run, such as the pipeline's manifest and report)."""
    removed = [name for name in sorted(os.listdir(folder))
               if name.startswith(TEMP_PREFIXES) and os.path.isfile(os.path.join(folder, name))]
    for name in removed:
        os.remove(os.path.join(folder, name))
    return removed
