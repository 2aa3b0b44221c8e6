"""Where each teacher comes from: DISTILL.TEACHERS entries resolved to (config file, checkpoint) pairs on disk.

An entry of DISTILL.TEACHERS.CONFIGS is a config file (compressreid or fast-reid) or a finished run folder
(its ``config.yaml``, and its ``model_final.pth`` unless DISTILL.TEACHERS.WEIGHTS names another checkpoint).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Sequence

from yacs.config import CfgNode

from compressreid.config import load_config
from compressreid.engine.resume import FINAL_MODEL
from compressreid.errors import CheckpointError, ConfigError

# What a run folder holds (written by RunDirectory.start and fit).
RUN_CONFIG = "config.yaml"


@dataclass(frozen=True)
class TeacherSource:
    """One teacher's files.

    Attributes:
        entry: the DISTILL.TEACHERS.CONFIGS entry as the user wrote it (for messages).
        config: its config file.
        weights: its checkpoint (may not exist yet: see ``missing_weights``).
    """

    entry: str
    config: str
    weights: str

    def load_config(self) -> CfgNode:
        return load_config(self.config)


def resolve_teacher_sources(cfg: CfgNode) -> List[TeacherSource]:
    """Each teacher's config file and checkpoint path; the config files must exist, the checkpoints not yet.

    Raises:
        ConfigError: no teachers, mismatched WEIGHTS, a missing config file, or no checkpoint named.
    """
    t = cfg.DISTILL.TEACHERS
    configs, weights = list(t.CONFIGS), list(t.WEIGHTS)
    if not configs:
        raise ConfigError("DISTILL.TEACHERS.CONFIGS is empty; name at least one teacher config file or run folder")
    if weights and len(weights) != len(configs):
        raise ConfigError(f"DISTILL.TEACHERS.WEIGHTS has {len(weights)} entries for {len(configs)} CONFIGS; "
                          "give one checkpoint per teacher or none")
    weights = weights or [""] * len(configs)
    return [_resolve(i, entry, path) for i, (entry, path) in enumerate(zip(configs, weights))]


def _resolve(index: int, entry: str, weights: str) -> TeacherSource:
    config = entry
    if os.path.isdir(entry):  # a finished run folder
        config = os.path.join(entry, RUN_CONFIG)
        weights = weights or os.path.join(entry, FINAL_MODEL)
    if not os.path.isfile(config):
        raise ConfigError(f"teacher {index}: config not found: {config} (DISTILL.TEACHERS.CONFIGS takes a config "
                          f"file or a run folder; relative paths are read from {os.getcwd()})")
    weights = weights or load_config(config).MODEL.WEIGHTS
    if not weights:
        raise ConfigError(f"teacher {index}: no checkpoint; set DISTILL.TEACHERS.WEIGHTS or MODEL.WEIGHTS in {config}")
    return TeacherSource(entry, config, weights)


def missing_weights(sources: Sequence[TeacherSource]) -> List[TeacherSource]:
    """The teachers whose checkpoint is not on disk."""
    return [s for s in sources if not os.path.isfile(s.weights)]


def check_teacher_files(sources: Sequence[TeacherSource]) -> None:
    """Raise CheckpointError naming the first teacher whose checkpoint is missing (before any work starts)."""
    missing = missing_weights(sources)
    if missing:
        source = missing[0]
        raise CheckpointError(f"teacher checkpoint not found: {source.weights} (teacher {source.entry}; train it "
                              f"with tools/train_teacher.py --config-file {source.config}, or set "
                              "DISTILL.TEACHERS.WEIGHTS)")


def resolved_config(cfg: CfgNode, sources: Sequence[TeacherSource]) -> CfgNode:
    """A derived copy of ``cfg`` naming each teacher by its config file and checkpoint, for the teacher loader.

    The user's config (what config.yaml records) keeps what they wrote, run folders included.
    """
    derived = cfg.clone()
    derived.defrost()
    derived.DISTILL.TEACHERS.CONFIGS = [s.config for s in sources]
    derived.DISTILL.TEACHERS.WEIGHTS = [s.weights for s in sources]
    derived.freeze()
    return derived
