"""The stage contract of the pipeline and its registry: a stage is a name, how its config points at the stage
before it, which files it reads and writes, and a body ``run(stage_cfg, stage_dir, inputs) -> StageOutput``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Sequence, Tuple

from yacs.config import CfgNode

from compressreid.registry import Registry

# Registered stages by name; the built-in ones live in compressreid.pipeline.builtin (imported by the runner).
STAGES = Registry("pipeline stage")

FINAL_MODEL = "model_final.pth"


@dataclass(frozen=True)
class StageInputs:
    """What the runner hands a stage besides its config.

    Attributes:
        previous: folder of the stage before it ("" for the first stage).
        folders: every earlier stage's folder, by stage name.
        progress: draw progress bars (interactive runs).
    """

    previous: str = ""
    folders: Mapping[str, str] = field(default_factory=dict)
    progress: bool = False


@dataclass
class StageOutput:
    """What a finished stage returns: its folder and the metrics it wrote into ``metrics.json``."""

    folder: str
    metrics: Dict[str, object]


def _no_link(previous: str) -> Dict[str, object]:
    return {}


def _reads_nothing(cfg: CfgNode) -> Sequence[str]:
    return []


def _own_folder(cfg: CfgNode, folder: str) -> str:
    return folder


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    ``run`` writes the stage folder (= ``stage_cfg.OUTPUT_DIR``): config.yaml, its artifacts, metrics.json with
    ``gates`` and ``accepted``, status.json, plots/. A failed gate raises ``GateFailed`` after metrics.json was
    written with ``accepted`` false.

    Attributes:
        name: the name PIPELINE.STAGES uses (and the stage folder's name).
        run: the body, ``run(stage_cfg, stage_dir, inputs) -> StageOutput``.
        link: config values (dotted key -> value) that point this stage at the folder of the stage before it.
        reads: the input files of a stage config (checksummed: a changed input re-runs the stage).
        artifacts: output files inside the stage folder, the first being the model; checksummed so a changed or
            missing output re-runs the stage.
        fp32_model: the run folder whose ``model_final.pth`` gives the stage's parameters and MACs.
        onnx: an artifact that is already an ONNX model, timed as is (others are exported to time them).
    """

    name: str
    run: Callable[[CfgNode, str, StageInputs], StageOutput]
    link: Callable[[str], Dict[str, object]] = _no_link
    reads: Callable[[CfgNode], Sequence[str]] = _reads_nothing
    artifacts: Tuple[str, ...] = (FINAL_MODEL,)
    fp32_model: Callable[[CfgNode, str], str] = _own_folder
    onnx: str = ""


def register_stage(stage: Stage) -> Stage:
    """Add ``stage`` to STAGES under its name (a duplicate name raises KeyError)."""
    return STAGES.register(stage.name)(stage)
