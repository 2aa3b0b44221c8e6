"""The stage contract of the pipeline and its registry: a stage is a name, how its config points at the stage
before it, which files it reads and writes, and a body ``run(stage_cfg, stage_dir, inputs) -> StageOutput``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from yacs.config import CfgNode

from compressreid.gates import GateSpec
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
        resume: continue the stage's interrupted run from its folder's last_checkpoint.pth (only ever set for a
            ``resumable`` stage whose config and input are unchanged).
        allow_unsafe: checkpoints the stage loads may need arbitrary unpickling (``--allow-unsafe-checkpoint``).
        verdict: the stage's gates (compressreid.engine.verdict.Verdict), parsed and validated by the runner
            before any stage ran; the body hands it what it measured, and the runner checks it did.
    """

    previous: str = ""
    folders: Mapping[str, str] = field(default_factory=dict)
    progress: bool = False
    resume: bool = False
    allow_unsafe: bool = False
    verdict: Any = None


@dataclass
class StageOutput:
    """What a finished stage returns: its folder and the metrics its verdict wrote into ``metrics.json``."""

    folder: str
    metrics: Dict[str, object]


def _no_link(previous: str) -> Dict[str, object]:
    return {}


def _reads_nothing(cfg: CfgNode) -> Sequence[str]:
    return []


def _own_folder(cfg: CfgNode, folder: str) -> str:
    return folder


def _evaluation_spec(cfg: CfgNode, previous: Optional[GateSpec]) -> GateSpec:
    from compressreid.evaluation.run import evaluation_spec

    return evaluation_spec(cfg)


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    ``run`` writes the stage folder (= ``stage_cfg.OUTPUT_DIR``): config.yaml, its artifacts, plots/, and ends by
    handing what it measured to ``inputs.verdict``, which writes metrics.json and status.json (a failed gate raises
    ``GateFailed`` after that). A body that returns without a verdict is an error.

    Attributes:
        name: the name PIPELINE.STAGES uses (and the stage folder's name).
        run: the body, ``run(stage_cfg, stage_dir, inputs) -> StageOutput``.
        link: config values (dotted key -> value) that point this stage at the folder of the stage before it.
        reads: the input files of a stage config (checksummed: a changed input re-runs the stage).
        artifacts: output files inside the stage folder, the first being the model; checksummed so a changed or
            missing output re-runs the stage.
        fp32_model: the run folder whose ``model_final.pth`` gives the stage's parameters and MACs.
        onnx: an artifact that is already an ONNX model, timed as is (others are exported to time them).
        resumable: the body honours ``StageInputs.resume`` (its training continues from last_checkpoint.pth).
        spec: what the stage will report, ``spec(stage_cfg, previous stage's spec or None) -> GateSpec``: the runner
            validates every gate rule against it before any stage runs.
        shipped: the model file a finished stage ships, ``shipped(stage_folder) -> name`` inside the folder (the
            pipeline's final artifact when it is the last stage, checksummed with the artifacts; the report
            measures the first artifact, which the stage's metrics are of, and notes the shipped file); its first
            artifact by default.
    """

    name: str
    run: Callable[[CfgNode, str, StageInputs], StageOutput]
    link: Callable[[str], Dict[str, object]] = _no_link
    reads: Callable[[CfgNode], Sequence[str]] = _reads_nothing
    artifacts: Tuple[str, ...] = (FINAL_MODEL,)
    fp32_model: Callable[[CfgNode, str], str] = _own_folder
    onnx: str = ""
    resumable: bool = False
    spec: Callable[[CfgNode, Optional[GateSpec]], GateSpec] = _evaluation_spec
    shipped: Optional[Callable[[str], str]] = None

    def shipped_name(self, folder: str) -> Optional[str]:
        """The model file the finished stage in ``folder`` ships, relative to it (None: the stage ships none)."""
        if self.shipped is not None:
            return self.shipped(folder)
        return self.artifacts[0] if self.artifacts else None

    def outputs(self, folder: str) -> Tuple[str, ...]:
        """The files checksummed for reuse: the artifacts and the shipped model."""
        name = self.shipped_name(folder)
        return self.artifacts + ((name,) if name and name not in self.artifacts else ())


def register_stage(stage: Stage) -> Stage:
    """Add ``stage`` to STAGES under its name (a duplicate name raises KeyError)."""
    return STAGES.register(stage.name)(stage)
