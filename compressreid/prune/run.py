"""One pruning run: load PRUNE.SOURCE, prune it in PRUNE.STEPS steps with distillation fine-tuning in between,
save it with its pruning history, evaluate it next to the unpruned model and check TEST.GATES.
"""

from __future__ import annotations

import copy
import logging
from typing import Dict, List, Optional

import torch
from yacs.config import CfgNode

from compressreid.checkpoint import save_checkpoint
from compressreid.data.build import load_train_data
from compressreid.data.verify import check_test_images
from compressreid.distill.sources import check_teacher_files, resolve_teacher_sources
from compressreid.engine.device import resolve_device, seed_everything
from compressreid.engine.distributed import DistContext
from compressreid.engine.resume import FINAL_MODEL
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.source_run import PRUNING_HISTORY, SourceRun, load_source_model, resolve_source
from compressreid.engine.verdict import Verdict, source_reference
from compressreid.errors import ConfigError
from compressreid.evaluation.run import Evaluation, ReferenceModel, evaluate_run, evaluation_spec
from compressreid.gates import GateSpec
from compressreid.prune.adapter import TARGETS, count_macs_params, prune_step
from compressreid.prune.finetune import (TEACHERS, accumulate_gradients, build_finetune_task, finetune,
                                         finetune_config)
from compressreid.prune.history import new_history, refresh_feature_info
from compressreid.prune.importance import PRUNING_IMPORTANCES

logger = logging.getLogger(__name__)

# MODEL keys that do not shape the network: they may differ between this config and the source's.
_NOT_ARCHITECTURE = {"DEVICE", "WEIGHTS", "LOAD_STRICT", "FREEZE_LAYERS", "LOSSES", "BACKBONE.PRETRAIN", "BACKBONE.PRETRAIN_PATH",
                     "HEADS.NUM_CLASSES"}


def _flatten(node: CfgNode, prefix: str = "") -> Dict[str, object]:
    out = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if name in _NOT_ARCHITECTURE:
            continue
        out.update(_flatten(value, f"{name}.") if isinstance(value, CfgNode) else {name: value})
    return out


def check_same_model(cfg: CfgNode, source: SourceRun) -> None:
    """The pruned run folder is rebuilt from THIS config's MODEL, so it must describe the source's network.

    Raises:
        ConfigError: naming the first architecture key that differs.
    """
    ours, theirs = _flatten(cfg.MODEL), _flatten(source.config.MODEL)
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            raise ConfigError(f"MODEL.{key} is {ours.get(key)!r} here but {theirs.get(key)!r} in the config of "
                              f"PRUNE.SOURCE ({source.label}); the pruned model is rebuilt from this config, so its "
                              "MODEL section must describe the source model")


def check_prune_inputs(cfg: CfgNode, allow_unsafe: bool = False) -> SourceRun:
    """Everything cheap to check, before OUTPUT_DIR is touched; returns the resolved source.

    Args:
        allow_unsafe: the source checkpoint may need arbitrary unpickling (``--allow-unsafe-checkpoint``).

    Raises:
        ConfigError / CheckpointError: a bad PRUNE value, a missing or mismatched source, missing teachers,
            a gate naming an unknown reference.
    """
    p = cfg.PRUNE
    if not 0 < p.RATIO < 1:
        raise ConfigError(f"PRUNE.RATIO must be in (0, 1) (the fraction of {p.TARGET} to remove), got {p.RATIO}")
    if p.TARGET not in TARGETS:
        raise ConfigError(f"PRUNE.TARGET '{p.TARGET}' must be one of {TARGETS}")
    if p.IMPORTANCE not in PRUNING_IMPORTANCES:
        raise ConfigError(f"PRUNE.IMPORTANCE '{p.IMPORTANCE}' is unknown; valid: {', '.join(PRUNING_IMPORTANCES)}")
    if p.TEACHER not in TEACHERS:
        raise ConfigError(f"PRUNE.TEACHER '{p.TEACHER}' must be one of {TEACHERS}")
    # PRUNE.STEPS, ROUND_TO and FINETUNE_ITERS are range-checked with every budget when the config is loaded
    source = resolve_source(p.SOURCE, cfg, "PRUNE.SOURCE", allow_unsafe=allow_unsafe)
    check_same_model(cfg, source)
    if p.TEACHER == "teacher" and (p.FINETUNE_ITERS > 0 or PRUNING_IMPORTANCES.get(p.IMPORTANCE).needs_gradients):
        check_teacher_files(resolve_teacher_sources(source.config))
    return source


def prune_gate_spec(cfg: CfgNode) -> GateSpec:
    """What a pruning run reports: the pruned model's evaluation and its parameter and MAC counts; reference
    ``unpruned`` (the source model, evaluated in the same run)."""
    return evaluation_spec(cfg, ("params", "macs"), ["unpruned"])


def prune_verdict(cfg: CfgNode, source: SourceRun) -> Verdict:
    """The pruning run's gates, validated now; ``previous`` is what the source run measured."""
    return Verdict("prune", cfg, prune_gate_spec(cfg), source_reference(source.folder))


def _counts_record(before: Dict[str, int], after: Dict[str, int], steps: List[dict], cfg: CfgNode) -> dict:
    p = cfg.PRUNE
    return {"params": after["params"], "macs": after["macs"],
            "pruning": {"params_before": before["params"], "params_after": after["params"],
                        "macs_before": before["macs"], "macs_after": after["macs"],
                        "params_kept": round(after["params"] / before["params"], 4),
                        "macs_kept": round(after["macs"] / before["macs"], 4),
                        "input_size": list(cfg.INPUT.SIZE_TEST), "target": p.TARGET, "ratio": p.RATIO,
                        "importance": p.IMPORTANCE, "global": bool(p.GLOBAL), "round_to": p.ROUND_TO,
                        "teacher": p.TEACHER, "finetune_iters": p.FINETUNE_ITERS, "steps": steps}}


def run_prune(cfg: CfgNode, run: RunDirectory, dist: DistContext = DistContext(),
              device: Optional[torch.device] = None, progress: bool = True,
              allow_unsafe: bool = False) -> Optional[Evaluation]:
    """Prune PRUNE.SOURCE to (1 - RATIO) of its MACs or parameters; writes ``model_final.pth`` (weights and
    pruning history) and evaluates the pruned model beside the unpruned one (its gate reference ``unpruned``).

    Returns:
        the evaluation for the caller's Verdict (None on ranks other than 0).
    """
    source = check_prune_inputs(cfg, allow_unsafe)
    p = cfg.PRUNE
    seed_everything(cfg.SEED)
    device = device or resolve_device(cfg.MODEL.DEVICE)
    with dist.main_first():
        data = load_train_data(cfg)
        check_test_images(cfg)  # before pruning and fine-tuning, not at the evaluation after them
    unpruned = load_source_model(source, data.num_classes).to(device).eval().requires_grad_(False)
    student = copy.deepcopy(unpruned).requires_grad_(True)
    input_size = list(cfg.INPUT.SIZE_TEST)
    before = count_macs_params(student, input_size)
    spec = PRUNING_IMPORTANCES.get(p.IMPORTANCE)
    history, steps = new_history(input_size), []
    logger.info("pruning %s (%d params, %.1f M MACs at %s) by %.0f%% of its %s in %d step(s), %s importance",
                source.label, before["params"], before["macs"] / 1e6, input_size, p.RATIO * 100, p.TARGET, p.STEPS,
                p.IMPORTANCE)
    for step in range(1, p.STEPS + 1):
        step_cfg = finetune_config(cfg, source, step)
        if spec.needs_gradients:
            task = build_finetune_task(step_cfg, student, unpruned, source, data.num_classes, device)
            try:
                accumulate_gradients(task, step_cfg, data, dist)
            finally:
                task.close()
        goal = before[p.TARGET] * (1 - p.RATIO * step / p.STEPS)
        result = prune_step(student, input_size, spec.build(), p.TARGET, goal, p.ROUND_TO, p.GLOBAL)
        history["steps"].append(result.records)
        refresh_feature_info(student, input_size)
        record = {"step": step, "channel_ratio": round(result.channel_ratio, 4), **result.counts}
        logger.info("step %d/%d: channel ratio %.3f -> %d params, %.1f M MACs (%.1f%% of the source's %s)", step,
                    p.STEPS, result.channel_ratio, result.counts["params"], result.counts["macs"] / 1e6,
                    100 * result.counts[p.TARGET] / before[p.TARGET], p.TARGET)
        task = build_finetune_task(step_cfg, student, unpruned, source, data.num_classes, device)
        try:
            summary = finetune(step_cfg, run, task, data, dist, device, step, progress)
        finally:
            task.close()
        if summary:
            record["finetune"] = summary
        steps.append(record)
    student.eval()
    after = count_macs_params(student, input_size)
    if not dist.is_main:
        return None
    save_checkpoint(run.file(FINAL_MODEL), student, **{PRUNING_HISTORY: history})
    run.record(_counts_record(before, after, steps, cfg))
    reference = ReferenceModel("unpruned", unpruned, source.config.INPUT.SIZE_TEST, source.label)
    return evaluate_run(cfg, run, model=student, label="pruned", progress=progress, reference_models=[reference],
                        name="pruned")
