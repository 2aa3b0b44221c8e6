"""Deployment numbers of a finished stage for the report: parameters, MACs, size on disk, latency at batch 1.

Every number is measured on this machine or left as None ("n/a" in the report) with a note saying why; a
measurement that cannot be taken never stops the pipeline.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Dict, List, Optional

from yacs.config import CfgNode

from compressreid.pipeline.stages import Stage

logger = logging.getLogger(__name__)


def _count(model, input_size) -> Dict[str, float]:
    import torch_pruning as tp

    from compressreid.export.onnx_export import example_images

    macs, params = tp.utils.count_ops_and_params(model.eval(), example_images(input_size, 1))
    return {"params": int(params), "macs": int(macs)}


def _latency(onnx_path: str, input_size, cfg: CfgNode) -> Dict[str, float]:
    from compressreid.export.latency import measure_latency

    return measure_latency(onnx_path, input_size, batch=1, iters=cfg.QUANT.BENCHMARK.ITERS,
                           threads=cfg.QUANT.BENCHMARK.THREADS)


def measure_stage(stage: Stage, cfg: CfgNode, folder: str, latency: bool = True) -> Dict[str, object]:
    """Measure a stage's model, the one its metrics are of (its ``fp32_model`` folder for counts, its first
    artifact for size, its ONNX artifact or an export for latency), so a report row's accuracy and speed describe
    one file. Where the stage ships another file (the quantize stage's FP32 model where INT8 ran slower), a note
    and ``shipped`` name it.

    Returns:
        ``params``, ``macs``, ``size_bytes``, ``latency_ms`` (p50, batch 1), ``latency`` (the full timing),
        ``notes`` and, where it differs from the measured model, ``shipped``; each number None when it could not be
        measured.
    """
    out: Dict[str, object] = {"params": None, "macs": None, "size_bytes": None, "latency_ms": None,
                              "latency": None, "notes": []}
    notes: List[str] = out["notes"]  # type: ignore[assignment]
    measured = stage.artifacts[0] if stage.artifacts else None
    shipped = stage.shipped_name(folder)
    if shipped and shipped != measured:
        out["shipped"] = shipped
        notes.append(f"ships {shipped}, not {measured} (its card says why); the row's numbers are {measured}'s")
    primary = os.path.join(folder, measured) if measured else ""
    if primary and os.path.isfile(primary):
        out["size_bytes"] = os.path.getsize(primary)
    model, input_size = None, list(cfg.INPUT.SIZE_TEST)
    # broad catches below: a number the report cannot show becomes "n/a" with its reason, never a crash after a
    # stage that itself succeeded
    try:
        from compressreid.engine.source_run import load_source_model, resolve_source

        source = resolve_source(stage.fp32_model(cfg, folder), cfg, f"{stage.name} model", require_accepted=False)
        model, input_size = load_source_model(source), list(source.config.INPUT.SIZE_TEST)
        out.update(_count(model, input_size))
    except Exception as exc:  # noqa: BLE001
        notes.append(f"params/MACs n/a: {_one_line(exc)}")
    if latency:
        out["latency"] = _measure_latency(stage, cfg, folder, model, input_size, notes)
        out["latency_ms"] = (out["latency"] or {}).get("ms_p50")
    else:
        notes.append("latency not measured (disabled)")
    for note in notes:
        logger.warning("%s: %s", stage.name, note)
    return out


def _measure_latency(stage: Stage, cfg: CfgNode, folder: str, model, input_size, notes: List[str]) -> Optional[dict]:
    try:
        if stage.onnx:
            return _latency(os.path.join(folder, stage.onnx), input_size, cfg)
        if model is None:
            notes.append("latency n/a: no model to export")
            return None
        from compressreid.export.onnx_export import export_onnx

        with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
            path = export_onnx(model, os.path.join(tmp, "model.onnx"), input_size)
            return _latency(path, input_size, cfg)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"latency n/a: {_one_line(exc)}")
        return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
