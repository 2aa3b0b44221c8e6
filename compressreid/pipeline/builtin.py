"""The built-in stages: teacher (train or load), baseline (the student trained alone), distill, prune, quantize,
each a call into the library.

Heavy modules are imported inside the bodies: the prune and quant packages are optional until used, and the
evaluation package imports the pipeline's gate, so importing it here at module level would be circular.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Sequence

from yacs.config import CfgNode

from compressreid.engine.io import atomic_copy
from compressreid.gates import GateSpec
from compressreid.pipeline.stages import FINAL_MODEL, Stage, StageInputs, StageOutput, register_stage

logger = logging.getLogger(__name__)

INT8_MODEL = "student_int8.onnx"
MODEL_CARD = "model_card.json"


def teacher_loads(cfg: CfgNode) -> bool:
    """A teacher stage whose MODEL.WEIGHTS names an existing file is loaded and evaluated, not trained."""
    return bool(cfg.MODEL.WEIGHTS) and os.path.isfile(cfg.MODEL.WEIGHTS)


def run_teacher(cfg: CfgNode, stage_dir: str, inputs: StageInputs) -> StageOutput:
    """Train the teacher (as tools/train_teacher.py) or, when MODEL.WEIGHTS exists, load and evaluate it."""
    from compressreid.engine.launch import training_run
    from compressreid.engine.run_dir import RunDirectory
    from compressreid.engine.supervised import train_supervised
    from compressreid.evaluation.run import evaluate_run

    label = cfg.MODEL.META_ARCHITECTURE
    if teacher_loads(cfg):
        logger.info("teacher: loading %s (MODEL.WEIGHTS exists), evaluating only", cfg.MODEL.WEIGHTS)
        run = RunDirectory(stage_dir).start(cfg, "teacher")
        with run.guard():
            # the folder is a complete run (distill reads <folder>/model_final.pth): the checkpoint is copied
            # byte for byte, so any format load_checkpoint understands stays loadable the same way
            atomic_copy(cfg.MODEL.WEIGHTS, run.file(FINAL_MODEL))
            evaluation = evaluate_run(cfg, run, label=label, progress=inputs.progress,
                                      allow_unsafe=inputs.allow_unsafe)
            inputs.verdict(run, evaluation.payload, evaluation.judged())
        return StageOutput(run.path, evaluation.payload)
    if cfg.MODEL.WEIGHTS:  # a typo must not silently turn "load my teacher" into hours of training
        from compressreid.errors import CheckpointError

        raise CheckpointError(f"teacher: MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} does not exist; fix the path, or leave "
                              "MODEL.WEIGHTS empty to train the teacher")
    with training_run(cfg, "train_teacher", resume=inputs.resume) as job:
        model = train_supervised(cfg, job.run, job.dist, job.device, resume=inputs.resume, progress=inputs.progress)
        evaluation = evaluate_run(cfg, job.run, model=model, label=label, progress=inputs.progress)
        inputs.verdict(job.run, evaluation.payload, evaluation.judged())
    return StageOutput(job.run.path, evaluation.payload)


def teacher_reads(cfg: CfgNode) -> List[str]:
    return [cfg.MODEL.WEIGHTS] if cfg.MODEL.WEIGHTS else []


def teacher_spec(cfg: CfgNode, previous: Optional[GateSpec]) -> GateSpec:
    from compressreid.engine.hooks import TRAINING_METRICS
    from compressreid.evaluation.run import evaluation_spec

    return evaluation_spec(cfg, () if teacher_loads(cfg) else TRAINING_METRICS)


def run_distill(cfg: CfgNode, stage_dir: str, inputs: StageInputs) -> StageOutput:
    """Distil the configured teachers into the student and evaluate both (as tools/distill.py)."""
    from compressreid.distill.train import check_distill_inputs, evaluate_distillation, train_distill
    from compressreid.engine.launch import training_run

    check_distill_inputs(cfg)
    with training_run(cfg, "distill", resume=inputs.resume) as job:
        outcome = train_distill(cfg, job.run, job.dist, job.device, resume=inputs.resume, progress=inputs.progress,
                                allow_unsafe=inputs.allow_unsafe)
        evaluation = evaluate_distillation(cfg, job.run, outcome, progress=inputs.progress)
        inputs.verdict(job.run, evaluation.payload, evaluation.judged())
    return StageOutput(job.run.path, evaluation.payload)


def distill_link(previous: str) -> Dict[str, object]:
    # the previous stage's run folder is the teacher: its config.yaml and model_final.pth
    return {"DISTILL.TEACHERS.CONFIGS": (previous,), "DISTILL.TEACHERS.WEIGHTS": ()} if previous else {}


def distill_spec(cfg: CfgNode, previous: Optional[GateSpec]) -> GateSpec:
    from compressreid.distill.train import distill_gate_spec

    return distill_gate_spec(cfg, len(cfg.DISTILL.TEACHERS.CONFIGS))


def distill_reads(cfg: CfgNode) -> List[str]:
    from compressreid.distill.sources import resolve_teacher_sources

    return [source.weights for source in resolve_teacher_sources(cfg)]


def run_prune(cfg: CfgNode, stage_dir: str, inputs: StageInputs) -> StageOutput:
    """Prune PRUNE.SOURCE with distillation fine-tuning (compressreid.prune.run)."""
    from compressreid.engine.launch import training_run
    from compressreid.prune.run import run_prune as prune  # written alongside; imported only when used

    with training_run(cfg, "prune") as job:
        evaluation = prune(cfg, job.run, job.dist, job.device, inputs.progress, inputs.allow_unsafe)
        inputs.verdict(job.run, evaluation.payload, evaluation.judged())
    return StageOutput(job.run.path, evaluation.payload)


def prune_spec(cfg: CfgNode, previous: Optional[GateSpec]) -> GateSpec:
    from compressreid.prune.run import prune_gate_spec

    return prune_gate_spec(cfg)


def _source_model(folder: str, cfg: CfgNode) -> List[str]:
    return [os.path.join(folder, FINAL_MODEL)] if folder else teacher_reads(cfg)


def run_quantize(cfg: CfgNode, stage_dir: str, inputs: StageInputs) -> StageOutput:
    """INT8-quantize QUANT.SOURCE (compressreid.quant.run): writes student_int8.onnx and model_card.json (whose
    ``model`` is the FP32 file it ships instead where INT8 ran slower, QUANT.BENCHMARK.WHEN_SLOWER)."""
    from compressreid.engine.run_dir import RunDirectory
    from compressreid.quant.run import check_quantize_inputs, run_quantize as quantize  # imported only when used

    plan = check_quantize_inputs(cfg, inputs.allow_unsafe)
    run = RunDirectory(stage_dir).start(cfg, "quantize")
    with run.guard():
        metrics = quantize(cfg, run, inputs.progress, plan, inputs.verdict)
    return StageOutput(run.path, metrics)


def quantize_spec(cfg: CfgNode, previous: Optional[GateSpec]) -> GateSpec:
    """The quantize stage's names; its source is the stage before, so ``source`` / ``teacher`` are that stage's."""
    from compressreid.quant.plan import quant_gate_spec

    source = previous.metrics if previous is not None else ()
    teacher = previous.references.get("teacher") if previous is not None else None
    return quant_gate_spec(cfg, source, teacher)


def _reads(key: str):
    def reads(cfg: CfgNode) -> Sequence[str]:
        return _source_model(cfg[key].SOURCE, cfg)

    return reads


def _link(key: str):
    def link(previous: str) -> Dict[str, object]:
        return {f"{key}.SOURCE": previous} if previous else {}

    return link


def quantize_shipped(folder: str) -> str:
    """The file the quantize stage ships: its card's model (the FP32 model where QUANT.BENCHMARK.WHEN_SLOWER
    ship_fp32 found INT8 slower), student_int8.onnx until the card exists."""
    card = os.path.join(folder, MODEL_CARD)
    if not os.path.isfile(card):
        return INT8_MODEL
    with open(card, encoding="utf-8") as f:
        return json.load(f)["model"]


register_stage(Stage("teacher", run_teacher, reads=teacher_reads, resumable=True, spec=teacher_spec))
# The student's architecture trained alone (the same body as the teacher stage, with the student's config): what
# distillation must beat. Later stages' gates name it ``baseline`` (every earlier stage is a reference by its name).
register_stage(Stage("baseline", run_teacher, reads=teacher_reads, resumable=True, spec=teacher_spec))
register_stage(Stage("distill", run_distill, link=distill_link, reads=distill_reads, resumable=True,
                     spec=distill_spec))
register_stage(Stage("prune", run_prune, link=_link("PRUNE"), reads=_reads("PRUNE"), spec=prune_spec))
register_stage(Stage("quantize", run_quantize, link=_link("QUANT"), reads=_reads("QUANT"),
                     artifacts=(INT8_MODEL, MODEL_CARD),
                     fp32_model=lambda cfg, folder: cfg.QUANT.SOURCE, onnx=INT8_MODEL, spec=quantize_spec,
                     shipped=quantize_shipped))
