"""The pipeline: validate every stage before any runs, then a plain loop that runs, reuses or resumes each stage in
order, recording it in OUTPUT_DIR/manifest.json, and a report at the end (also when a gate stops the chain).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from yacs.config import CfgNode

from compressreid.config import dump_config, load_config
from compressreid.config.loading import merge_dict, overrides_to_dict
from compressreid.engine.clear import clear_partial_files
from compressreid.engine.io import ensure_writable_dir
from compressreid.engine.resume import LAST_CHECKPOINT, check_resumable
from compressreid.engine.run_lock import FolderLock
from compressreid.engine.verdict import PREVIOUS, Verdict, read_metrics_file
from compressreid.errors import CompressReIDError, ConfigError, GateFailed
from compressreid.pipeline import builtin  # noqa: F401 - registers the built-in stages
from compressreid.pipeline.manifest import (MANIFEST_FILE, StageRecord, config_hash, files_checksum, metrics_summary,
                                            output_files, previous_records, read_manifest, reuse_blocker,
                                            write_manifest)
from compressreid.pipeline.measure import measure_stage
from compressreid.pipeline.stages import STAGES, Stage, StageInputs
from compressreid.registry import Registry

logger = logging.getLogger(__name__)

# Command-line keys that configure the pipeline itself; every other KEY VALUE applies to every stage's config.
_PIPELINE_KEYS = ("PIPELINE.", "OUTPUT_DIR")


@dataclass(frozen=True)
class PlannedStage:
    """A stage ready to run: its derived config (file + shared overrides + link + OUTPUT_DIR), folder, and its
    gates, parsed and validated against what the stage will report."""

    index: int
    name: str
    config_file: str
    folder: str
    cfg: CfgNode
    stage: Stage
    verdict: Verdict


@dataclass(frozen=True)
class PipelinePlan:
    cfg: CfgNode
    output_dir: str
    stages: Tuple[PlannedStage, ...]

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.output_dir, MANIFEST_FILE)


@dataclass(frozen=True)
class RunOptions:
    """How this invocation runs its stages (none of it changes what a stage computes)."""

    progress: bool = False
    measure: bool = True
    latency: bool = True
    allow_unsafe: bool = False


@dataclass(frozen=True)
class PipelineResult:
    status: str
    manifest: str
    report: str
    final_artifact: Optional[str]


def split_overrides(opts: Sequence[str]) -> Tuple[List[str], List[str]]:
    """``KEY VALUE`` pairs for the pipeline config (PIPELINE.*, OUTPUT_DIR) and for every stage config (the rest)."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd number of items: {opts}")
    own, shared = [], []
    for key, value in zip(opts[0::2], opts[1::2]):
        (own if key.startswith(_PIPELINE_KEYS) else shared).extend([key, value])
    return own, shared


def _derive(name: str, config_file: str, shared: Sequence[str], link: Dict[str, object], folder: str) -> CfgNode:
    cfg = load_config(config_file, shared, freeze=False)
    pairs = [item for key, value in link.items() for item in (key, value)]
    merge_dict(cfg, overrides_to_dict([*pairs, "OUTPUT_DIR", folder]), f"the pipeline's links of stage '{name}'")
    cfg.freeze()
    return cfg


def plan_pipeline(cfg: CfgNode, shared: Sequence[str] = (), registry: Registry = STAGES) -> PipelinePlan:
    """Check everything cheap before any stage starts and derive each stage's config.

    Raises:
        ConfigError: no stages, CONFIGS not one per stage, an unknown or repeated stage name, a missing or invalid
            stage config, a gate rule that is malformed or names a metric, reference or test set its stage does not
            have, a stage without gates (unless PIPELINE.ALLOW_UNGATED).
    """
    names, files = list(cfg.PIPELINE.STAGES), list(cfg.PIPELINE.CONFIGS)
    if not names:
        raise ConfigError("PIPELINE.STAGES is empty; name the stages to run, e.g. (\"teacher\", \"distill\")")
    if len(files) != len(names):
        raise ConfigError(f"PIPELINE.CONFIGS has {len(files)} entries for {len(names)} PIPELINE.STAGES; "
                          "give one stage config file per stage")
    for name in names:
        if name not in registry:
            raise ConfigError(f"unknown pipeline stage '{name}'; valid names: {', '.join(registry.names())}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"pipeline stage(s) {', '.join(repeated)} appear twice; each stage has one folder")
    for name, path in zip(names, files):
        if not os.path.isfile(path):
            raise ConfigError(f"stage '{name}': config file not found: {path} (relative paths are read from "
                              f"{os.getcwd()})")
    planned, previous, previous_spec, earlier = [], "", None, {}
    for index, (name, path) in enumerate(zip(names, files)):
        stage, folder = registry.get(name), os.path.join(cfg.OUTPUT_DIR, name)
        try:
            derived = _derive(name, path, shared, stage.link(previous), folder)
            spec = stage.spec(derived, previous_spec)
            checked = spec.with_reference(PREVIOUS, previous_spec.metrics) if previous_spec else spec
            for earlier_name, earlier_metrics in earlier.items():  # the stage's own reference of a name wins
                if earlier_name not in checked.references:
                    checked = checked.with_reference(earlier_name, earlier_metrics)
            verdict = Verdict(name, derived, checked)
        except ConfigError as exc:
            message = str(exc).removeprefix(f"stage '{name}': ")  # the verdict's own messages name the stage
            raise ConfigError(f"stage '{name}' ({path}): {message}") from None
        if not verdict.gated and not cfg.PIPELINE.ALLOW_UNGATED:
            raise ConfigError(f"stage '{name}' ({path}) has no TEST.GATES: its model would be handed on without "
                              "any judgement; add an absolute floor (e.g. TEST.GATES '(\"mAP >= 20\",)') or set "
                              "PIPELINE.ALLOW_UNGATED True")
        planned.append(PlannedStage(index, name, path, folder, derived, stage, verdict))
        previous, previous_spec = folder, spec
        earlier[name] = spec.metrics
    return PipelinePlan(cfg, cfg.OUTPUT_DIR, tuple(planned))


def run_pipeline(plan: PipelinePlan, progress: bool = False, measure: bool = True, latency: bool = True,
                 allow_unsafe: bool = False) -> PipelineResult:
    """Run, reuse or resume every stage in order; stop at the first failed gate or error (later stages not run).

    A stage is reused when its last run was accepted and its config hash, input checksum and outputs are
    unchanged; once a stage runs, every stage after it runs too. A resumable stage whose last run was interrupted
    (or failed) with the same config and input continues from its folder's last checkpoint. OUTPUT_DIR is locked
    for the whole run (each stage folder is locked by its own run too).

    Args:
        allow_unsafe: checkpoints the stages load may need arbitrary unpickling (``--allow-unsafe-checkpoint``).

    Raises:
        GateFailed: a stage's gate failed (manifest and report written, the stage marked rejected).
        ConfigError: OUTPUT_DIR cannot be written, or another run holds it.
    """
    ensure_writable_dir(plan.output_dir)
    lock = FolderLock(plan.output_dir, "compress").acquire()
    try:
        return _run_locked(plan, RunOptions(progress, measure, latency, allow_unsafe))
    finally:
        lock.release()


def _run_locked(plan: PipelinePlan, options: RunOptions) -> PipelineResult:
    from compressreid.pipeline.report import remove_report, write_report

    earlier = previous_records(read_manifest(plan.manifest_path))
    clear_partial_files(plan.output_dir)  # a killed run's half-written manifest or report
    remove_report(plan.output_dir)  # rewritten at the end; a run that fails first must not show the last one's
    dump_config(plan.cfg, os.path.join(plan.output_dir, "config.yaml"))
    records = [StageRecord(p.index, p.name, p.config_file, p.folder) for p in plan.stages]
    manifest = {"output_dir": plan.output_dir, "status": "running", "started": time.time(), "stages": records,
                "final_artifact": None}

    def save() -> None:
        write_manifest(plan.manifest_path, _payload(manifest))

    save()
    ran: List[str] = []
    try:
        for planned in plan.stages:
            _resume_or_run(planned, earlier, plan, records, ran, options, save)
            save()
    except BaseException as exc:
        manifest["status"] = _outcome(exc)
        manifest["error"] = f"{type(exc).__name__}: {exc}"
        save()
        if isinstance(exc, GateFailed):
            _report_despite_failure(write_report, plan, manifest)
        raise
    last = plan.stages[-1]
    manifest["status"] = "accepted"
    shipped = last.stage.shipped_name(last.folder)
    manifest["final_artifact"] = os.path.join(last.folder, shipped) if shipped else None
    manifest["report"] = write_report(plan.output_dir, _payload(manifest))
    save()
    reused = [r.name for r in records if r.reused]
    logger.info("pipeline accepted: reused %s; ran %s", ", ".join(reused) or "none", ", ".join(ran) or "none")
    return PipelineResult("accepted", plan.manifest_path, manifest["report"]["markdown"], manifest["final_artifact"])


def _outcome(exc: BaseException) -> str:
    """The status an exception gives a stage or the pipeline: a failed gate, a signal / Ctrl-C, anything else."""
    if isinstance(exc, GateFailed):
        return "rejected"
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"


def _payload(manifest: Dict[str, object]) -> Dict[str, object]:
    payload = {k: v for k, v in manifest.items() if k != "stages"}
    payload["updated"] = time.time()
    payload["stages"] = [r.to_dict() for r in manifest["stages"]]  # type: ignore[union-attr]
    return payload


def _report_despite_failure(write_report, plan: PipelinePlan, manifest: Dict[str, object]) -> None:
    # the gate failure is what the user must see: a broken report is logged, it never replaces exit code 3
    try:
        manifest["report"] = write_report(plan.output_dir, _payload(manifest))
        write_manifest(plan.manifest_path, _payload(manifest))
        logger.info("report (showing the failure): %s", manifest["report"]["markdown"])
    except Exception:  # noqa: BLE001
        logger.exception("could not write the report after the gate failure")


def _resume_or_run(planned: PlannedStage, earlier: Dict[Tuple[int, str], StageRecord], plan: PipelinePlan,
                   records: List[StageRecord], ran: List[str], options: RunOptions,
                   save: Callable[[], None]) -> None:
    """Reuse the stage's earlier record, or run it (resuming its interrupted run where it can);
    ``records[planned.index]`` holds the outcome either way, and is saved as 'running' before the body starts."""
    record = StageRecord(planned.index, planned.name, planned.config_file, planned.folder,
                         config_hash=config_hash(planned.cfg))
    record.inputs, record.input_checksum = files_checksum(list(planned.stage.reads(planned.cfg)))
    old = earlier.get((planned.index, planned.name))
    blocker = (f"an earlier stage ({ran[0]}) ran again" if ran else
               reuse_blocker(old, record.config_hash, record.input_checksum, planned.folder,
                             planned.stage.outputs(planned.folder)))
    tag = f"stage {planned.index + 1}/{len(plan.stages)} '{planned.name}'"
    if not blocker and old is not None:
        logger.info("%s: SKIPPED, its accepted run is up to date (same config hash %s, input checksum %s, outputs)",
                    tag, record.config_hash[:12], record.input_checksum[:12])
        records[planned.index] = replace(old, config=planned.config_file, folder=planned.folder, reused=True,
                                         resumed=False, reason="unchanged since its accepted run")
        return
    checkpoint = _resumable_checkpoint(planned, old, record)
    if checkpoint:
        logger.info("%s: RESUMING its %s run from %s (same config hash %s, input checksum %s)", tag, old.status,
                    checkpoint, record.config_hash[:12], record.input_checksum[:12])
        record.reason, record.resumed = f"resumed its {old.status} run from {LAST_CHECKPOINT}", True
    else:
        logger.info("%s: RUNNING because %s (folder %s)", tag, blocker, planned.folder)
        record.reason = blocker
    ran.append(planned.name)
    # in place and saved before the body runs, so a failure, a signal or even a SIGKILL is recorded on this stage
    # with the hashes a later run needs to resume it
    record.status = "running"
    records[planned.index] = record
    save()
    previous = plan.stages[planned.index - 1].folder if planned.index else ""
    if previous:  # the stage before's verdict, as it wrote it: gates may name it as ``previous``
        planned.verdict.offer(PREVIOUS, read_metrics_file(os.path.join(previous, "metrics.json"),
                                                          f"stage '{planned.name}': the stage before"))
    for earlier in plan.stages[:planned.index]:  # and every earlier stage by its name (e.g. ``baseline``)
        if earlier.name not in planned.verdict.references:
            planned.verdict.offer(earlier.name, read_metrics_file(os.path.join(earlier.folder, "metrics.json"),
                                                                  f"stage '{planned.name}': stage '{earlier.name}'"))
    inputs = StageInputs(previous, {p.name: p.folder for p in plan.stages[:planned.index]}, options.progress,
                         resume=bool(checkpoint), allow_unsafe=options.allow_unsafe, verdict=planned.verdict)
    _run_stage(planned, record, inputs, options)


def _resumable_checkpoint(planned: PlannedStage, old: Optional[StageRecord], record: StageRecord) -> str:
    """The checkpoint the stage's unfinished run can continue from, or "" when it must start over.

    Only a resumable stage whose last run ended early ('running' is what a SIGKILLed pipeline leaves) with the
    same config hash and input checksum qualifies, and only if its checkpoint passes the check ``--resume`` does.
    """
    if not planned.stage.resumable or old is None or old.status not in ("running", "interrupted", "failed"):
        return ""
    if (old.config_hash, old.input_checksum) != (record.config_hash, record.input_checksum):
        changed = "config" if old.config_hash != record.config_hash else "input"
        logger.info("stage '%s' cannot resume its %s run: its %s changed since", planned.name, old.status, changed)
        return ""
    try:
        return check_resumable(planned.folder, planned.cfg)
    except CompressReIDError as exc:
        logger.info("stage '%s' cannot resume its %s run (%s): starting over", planned.name, old.status, exc)
        return ""


def _run_stage(planned: PlannedStage, record: StageRecord, inputs: StageInputs, options: RunOptions) -> None:
    """Run the body and fill ``record`` whatever happens (the exception, if any, goes on to the runner)."""
    start = time.time()
    try:
        planned.stage.run(planned.cfg, planned.folder, inputs)
        if planned.verdict.status is None:  # a stage cannot skip its gates: the runner checks it was judged
            raise RuntimeError(f"stage '{planned.name}' returned without handing its results to its verdict")
        record.status = planned.verdict.status  # accepted, or ungated (PIPELINE.ALLOW_UNGATED)
    except GateFailed as exc:
        record.status, record.error = "rejected", str(exc)
        raise
    except BaseException as exc:
        record.status, record.error = _outcome(exc), f"{type(exc).__name__}: {exc}"
        raise
    finally:
        record.wall_seconds = round(time.time() - start, 2)
        _fill_results(planned, record, options.measure, options.latency)
        logger.info("stage '%s' %s in %.1f s", planned.name, record.status.upper(), record.wall_seconds)


def _fill_results(planned: PlannedStage, record: StageRecord, measure: bool, latency: bool) -> None:
    if record.status in ("failed", "interrupted"):  # no results: nothing to measure
        return
    metrics = _read_metrics(planned.folder)
    record.metrics, record.gates = metrics_summary(metrics), list(metrics.get("gates", []))
    record.outputs, record.output_checksum = output_files(planned.folder, planned.stage.outputs(planned.folder))
    if measure:
        record.measurements = measure_stage(planned.stage, planned.cfg, planned.folder, latency)


def _read_metrics(folder: str) -> Dict[str, object]:
    path = os.path.join(folder, "metrics.json")
    if not os.path.isfile(path):
        return {}
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)
