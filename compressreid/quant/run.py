"""One quantization run: FP32 export with parity, INT8 by PTQ or QAT, the INT8-vs-FP32 gate, fallback, model card.

What is measured is what ships: every INT8 metric comes from the ONNX file that is written, run in ONNX Runtime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from torch import nn
from yacs.config import CfgNode

from compressreid.data.build import load_test_sets
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.source_run import SourceRun, load_source_model, resolve_source
from compressreid.errors import ConfigError, ExportError
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.evaluation.report import metrics_payload, write_plots
from compressreid.evaluation.run import check_gate_rules, load_reference_metrics
from compressreid.export.latency import measure_latency
from compressreid.export.model_card import build_model_card, read_card_if_present, write_model_card
from compressreid.export.onnx_export import export_onnx
from compressreid.export.ort_model import OrtEmbedder, check_embedding_graph, ort_session
from compressreid.export.parity import check_export_parity, embedding_parity
from compressreid.pipeline.gate import check_gates, raise_if_failed
from compressreid.quant.calibration import calibration_batches
from compressreid.quant.compare import Embedded, evaluate_cached, load_test_images, quantization_parity, summary
from compressreid.quant.fallback import accuracy_aware_fallback, layer_sensitivity, ptq_quantizer
from compressreid.quant.ptq import (check_activation_type, check_calibration_method, check_histogram_bins,
                                    preprocess)

logger = logging.getLogger(__name__)

METHODS = ("ptq", "qat")
SHIPPED = "student_int8.onnx"
REJECTED = "student_int8.rejected.onnx"
FP32_FILE = "student_fp32.onnx"
CARD_FILE = "model_card.json"


@dataclass
class QuantPlan:
    """The checked inputs of a run: where the FP32 model comes from and what gates may reference."""

    method: str
    source: Optional[SourceRun]  # a PyTorch run folder / checkpoint
    onnx_source: str  # or an FP32 ONNX file
    input_size: List[int]
    references: Dict[str, Dict[str, float]] = field(default_factory=dict)


def _numbers(data: Dict[str, object]) -> Dict[str, float]:
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _source_metrics(folder: str) -> Dict[str, object]:
    path = os.path.join(folder, "metrics.json")
    if not folder or not os.path.isfile(path):
        return {}
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def check_quantize_inputs(cfg: CfgNode) -> QuantPlan:
    """Everything cheap to check, before OUTPUT_DIR is touched.

    Raises:
        ConfigError / CheckpointError / ExportError: unknown method or calibration method, a missing source, an
            ONNX source that is not an images -> embedding graph of INPUT.SIZE_TEST or disagrees with its model
            card, QAT asked of an ONNX source, a gate naming an unknown reference.
    """
    q = cfg.QUANT
    if q.METHOD not in METHODS:
        raise ConfigError(f"QUANT.METHOD '{q.METHOD}' is unknown; expected one of {METHODS}")
    check_calibration_method(q.CALIBRATION.METHOD)
    check_histogram_bins(q.CALIBRATION.HISTOGRAM_BINS)
    check_activation_type(q.ACTIVATION_TYPE)
    if q.CALIBRATION.NUM_IMAGES < 1 or q.CALIBRATION.BATCH_SIZE < 1:
        raise ConfigError("QUANT.CALIBRATION.NUM_IMAGES and BATCH_SIZE must be >= 1 (calibration needs training "
                          f"images), got {q.CALIBRATION.NUM_IMAGES} and {q.CALIBRATION.BATCH_SIZE}")
    references = load_reference_metrics(cfg.TEST.GATE_REFERENCE)
    if q.SOURCE.endswith(".onnx"):
        if q.METHOD == "qat":
            raise ConfigError(f"QUANT.METHOD qat needs a PyTorch model to fine-tune; QUANT.SOURCE is an ONNX file "
                              f"({q.SOURCE}): name the run folder instead")
        if not os.path.isfile(q.SOURCE):
            raise ExportError(f"QUANT.SOURCE: ONNX file not found: {q.SOURCE}")
        shape = check_embedding_graph(q.SOURCE)
        ort_session(q.SOURCE)  # an operator ONNX Runtime cannot run is bad input, found before OUTPUT_DIR exists
        expected = list(cfg.INPUT.SIZE_TEST)
        if any(0 < s != e for s, e in zip(shape[2:], expected)):
            raise ExportError(f"QUANT.SOURCE {q.SOURCE} takes {shape[2]}x{shape[3]} images but INPUT.SIZE_TEST is "
                              f"{expected[0]}x{expected[1]}")
        read_card_if_present(q.SOURCE)
        plan = QuantPlan(q.METHOD, None, q.SOURCE, expected, references)
    else:
        source = resolve_source(q.SOURCE, cfg, "QUANT.SOURCE")
        plan = QuantPlan(q.METHOD, source, "", list(source.config.INPUT.SIZE_TEST), references)
        measured = _source_metrics(source.folder)
        if measured:  # what the source stage measured (gate reference ``source``, and ``source_mAP_delta``)
            plan.references["source"] = _numbers(measured)
        if isinstance(measured.get("teacher"), dict):
            plan.references["teacher"] = _numbers(measured["teacher"])
    check_gate_rules(cfg.TEST.GATES, ["fp32", *plan.references, *(["fake_quant"] if q.METHOD == "qat" else [])])
    return plan


def _eval_config(cfg: CfgNode, plan: QuantPlan) -> CfgNode:
    derived = cfg.clone()
    derived.defrost()
    derived.INPUT.SIZE_TEST = list(plan.input_size)
    derived.freeze()
    return derived


class _Judge:
    """Evaluates an INT8 candidate on the first test set against the FP32 model and checks the gates."""

    def __init__(self, cfg: CfgNode, evaluator: ReIDEvaluator, images, fp32: Embedded,
                 references: Dict[str, Dict[str, float]], fixed: Dict[str, float]):
        self.cfg, self.evaluator, self.images, self.fp32, self.references = cfg, evaluator, images, fp32, references
        self.fixed = fixed  # metrics of the FP32 source, the same for every INT8 candidate (source_mAP_delta)

    def metrics(self, path: str) -> Dict[str, float]:
        int8 = evaluate_cached(self.evaluator, OrtEmbedder(path), self.images)
        return {**_numbers(int8.result.metrics), **quantization_parity(self.fp32, int8, self.cfg.TEST.METRIC),
                **self.fixed}

    def fails_on_fixed(self, metrics: Dict[str, float]) -> bool:
        """A failed rule no INT8 variant can change (the FP32 source is not the model handed over)."""
        decisions = check_gates(self.cfg.TEST.GATES, metrics, self.references)
        return any(not d.passed and d.metric in self.fixed for d in decisions)

    def __call__(self, path: str):
        metrics = self.metrics(path)
        decisions = check_gates(self.cfg.TEST.GATES, metrics, self.references)
        return metrics, all(d.passed for d in decisions)


def _latency(cfg: CfgNode, path: str, input_size) -> Dict[str, Dict[str, float]]:
    b = cfg.QUANT.BENCHMARK
    return {f"batch{n}": measure_latency(path, input_size, n, b.ITERS, b.THREADS) for n in (1, 32)}


def _export_fp32(plan: QuantPlan, fp32_path: str, opset: int, images) -> Tuple[Optional[nn.Module], Dict[str, float]]:
    """The FP32 ONNX graph quantization starts from, with its export parity (a copy when the source is ONNX)."""
    if plan.source is None:
        shutil.copyfile(plan.onnx_source, fp32_path)
        return None, {}
    model = load_source_model(plan.source).eval()
    export_onnx(model, fp32_path, plan.input_size, opset)
    parity = check_export_parity(model, OrtEmbedder(fp32_path), images.q_images[:64]).to_dict()
    logger.info("FP32 export parity: max abs %.3g, min cosine %.7f", parity["max_abs"], parity["cosine_min"])
    return model, parity


def _method_info(cfg: CfgNode, batches) -> Dict[str, object]:
    q = cfg.QUANT
    info: Dict[str, object] = {"method": q.METHOD, "format": "QDQ", "activations": f"{q.ACTIVATION_TYPE} per-tensor",
                               "weights": f"int8 {'per-channel' if q.PER_CHANNEL else 'per-tensor'} symmetric"}
    if q.METHOD == "ptq":
        info["calibration"] = {"split": "train", "images": sum(len(b) for b in batches),
                               "method": q.CALIBRATION.METHOD, "seed": cfg.SEED,
                               **({"percentile": q.CALIBRATION.PERCENTILE}
                                  if q.CALIBRATION.METHOD == "percentile" else {}),
                               **({"histogram_bins": q.CALIBRATION.HISTOGRAM_BINS}
                                  if q.CALIBRATION.METHOD != "minmax" else {})}
    return info


def _fallback(cfg: CfgNode, prepared: str, quantize, judge: _Judge, fp32_map: float, workdir: str,
              first: Dict[str, float], progress: bool) -> Tuple[Optional[str], Dict[str, object]]:
    """Sensitivity analysis and FP32 fallback; returns the fallback model (None if nothing tried) and its record."""
    logger.warning("INT8 model fails its gates (%s): measuring per-layer sensitivity for the FP32 fallback",
                   {k: round(v, 4) for k, v in first.items()})
    ranking = layer_sensitivity(prepared, quantize, judge, fp32_map, workdir, progress)
    outcome = accuracy_aware_fallback(ranking, quantize, judge, os.path.join(workdir, "int8_fallback.onnx"),
                                      cfg.QUANT.FALLBACK.MAX_FP32_LAYERS)
    record: Dict[str, object] = {"used": True, "sensitivity": [s.to_dict() for s in ranking],
                                 "tried": outcome.tried if outcome else [], "full_int8": first}
    if outcome is None:
        return None, record
    record["fp32_layers"] = outcome.fp32_layers
    return outcome.path, record


def _latency_report(cfg: CfgNode, candidate: str, fp32_path: str, full_int8: str, input_size) -> Dict[str, object]:
    latency: Dict[str, object] = {"int8": _latency(cfg, candidate, input_size),
                                  "fp32": _latency(cfg, fp32_path, input_size)}
    if candidate != full_int8:  # what keeping layers in FP32 cost
        latency["int8_without_fallback"] = _latency(cfg, full_int8, input_size)
    for batch in ("batch1", "batch32"):
        latency[f"speedup_{batch}"] = round(latency["fp32"][batch]["ms_p50"] / latency["int8"][batch]["ms_p50"], 2)
    return latency


def _ship(run: RunDirectory, candidate: str, accepted: bool) -> str:
    """Move the INT8 model to its final name: shipped when accepted, marked rejected otherwise."""
    artifact = run.file(SHIPPED if accepted else REJECTED)
    for stale in (run.file(SHIPPED), run.file(REJECTED)):
        if os.path.exists(stale):
            os.remove(stale)
    os.replace(candidate, artifact)
    return artifact


def run_quantize(cfg: CfgNode, run: RunDirectory, progress: bool = True) -> Dict[str, object]:
    """Quantize QUANT.SOURCE to INT8, judge it against its FP32 self, write the artifact and its model card.

    Writes ``student_int8.onnx`` when every TEST.GATES rule passes, ``student_int8.rejected.onnx`` otherwise.

    Raises:
        GateFailed: a gate failed after fallback (metrics.json, card and rejected artifact are written).
    """
    plan = check_quantize_inputs(cfg)
    eval_cfg = _eval_config(cfg, plan)
    q = cfg.QUANT
    workdir, fp32_path = run.file("work"), run.file(FP32_FILE)
    os.makedirs(workdir, exist_ok=True)
    images = [load_test_images(eval_cfg, t) for t in load_test_sets(eval_cfg)]
    model, export_parity = _export_fp32(plan, fp32_path, q.OPSET, images[0])
    evaluator = ReIDEvaluator.from_config(eval_cfg)
    fp32 = [evaluate_cached(evaluator, OrtEmbedder(fp32_path), im) for im in images]
    logger.info("FP32 (ONNX Runtime): %s", summary(fp32[0].result))
    references = {**plan.references, "fp32": {**_numbers(fp32[0].result.metrics), "cosine_mean": 1.0,
                                              "cosine_min": 1.0, "top10_overlap": 100.0}}
    batches = calibration_batches(eval_cfg, q.CALIBRATION.NUM_IMAGES, q.CALIBRATION.BATCH_SIZE, cfg.SEED)
    prepared = preprocess(fp32_path, os.path.join(workdir, "prepared.onnx"))
    fixed = {}
    if "mAP" in plan.references.get("source", {}):
        # the FP32 export of the model loaded here, scored by the same evaluator on the same data, must reproduce
        # what the source stage measured: otherwise this is not the model that stage handed over
        fixed["source_mAP_delta"] = abs(fp32[0].result.metrics["mAP"] - plan.references["source"]["mAP"])
    judge = _Judge(eval_cfg, evaluator, images[0], fp32[0], references, fixed)
    method_info = _method_info(cfg, batches)
    full_int8 = os.path.join(workdir, "int8_full.onnx")
    if plan.method == "qat":
        from compressreid.quant.qat import run_qat  # torch training only when asked for

        qat = run_qat(cfg, eval_cfg, plan.source, model, full_int8, judge, batches, run, progress)
        references["fake_quant"] = qat.fake_quant_metrics
        method_info.update(qat.info)
    else:
        quantize = ptq_quantizer(prepared, batches, q.CALIBRATION.METHOD, q.PER_CHANNEL, q.CALIBRATION.PERCENTILE,
                                 q.ACTIVATION_TYPE, q.CALIBRATION.HISTOGRAM_BINS)  # calibrates once
        quantize(full_int8)
    candidate, fallback_info = full_int8, {"used": False}
    first, passed = judge(full_int8)
    if not passed and q.FALLBACK.ENABLED and plan.method == "ptq" and not judge.fails_on_fixed(first):
        fallback_path, fallback_info = _fallback(cfg, prepared, quantize, judge, fp32[0].result.metrics["mAP"],
                                                 workdir, first, progress)
        candidate = fallback_path or full_int8
    int8 = [evaluate_cached(evaluator, OrtEmbedder(candidate), im) for im in images]
    method_info["runtime_parity"] = runtime_parity(candidate, images[0].q_images[:64])
    payload = metrics_payload([e.result for e in int8], SHIPPED)
    payload.update(quantization_parity(fp32[0], int8[0], cfg.TEST.METRIC))
    payload["fp32"] = metrics_payload([e.result for e in fp32], FP32_FILE)
    payload.update({name: references[name] for name in ("teacher", "fake_quant") if name in references})
    if plan.source is not None:
        payload["source"] = {"run": plan.source.label, **summary_of(_source_metrics(plan.source.folder))}
    payload.update(fixed)
    latency = _latency_report(cfg, candidate, fp32_path, full_int8, plan.input_size)
    payload.update({"export_parity": export_parity, "quantization": method_info, "fallback": fallback_info,
                    "latency": latency, "size_bytes": {"fp32": os.path.getsize(fp32_path),
                                                       "int8": os.path.getsize(candidate)}})
    decisions = check_gates(cfg.TEST.GATES, payload, references)
    accepted = all(d.passed for d in decisions)
    artifact = _ship(run, candidate, accepted)
    payload["artifact"] = os.path.basename(artifact)
    card_metrics = {"int8": summary(int8[0].result), "fp32": summary(fp32[0].result),
                    **({"teacher": references["teacher"]} if "teacher" in references else {})}
    write_model_card(run.file(CARD_FILE), build_model_card(
        artifact, plan.input_size, card_metrics, [d.to_dict() for d in decisions], accepted, latency, method_info,
        plan.source.label if plan.source else plan.onnx_source))
    write_plots(int8[0].result, run.file("plots"), "INT8", cfg.TEST.WORST_QUERIES)
    shutil.rmtree(workdir, ignore_errors=True)
    logger.info("INT8 %s: mAP %.2f (FP32 %.2f), cosine mean %.4f, top-10 overlap %.1f%%, %.2fx faster at batch 1",
                "accepted" if accepted else "REJECTED", payload["mAP"], fp32[0].result.metrics["mAP"],
                payload["cosine_mean"], payload["top10_overlap"], latency["speedup_batch1"])
    run.finish(payload, decisions)
    raise_if_failed(decisions, "quantize")
    return payload


def runtime_parity(path: str, images) -> Dict[str, float]:
    """How far ONNX Runtime's optimised session (fused integer kernels: what users run) lands from the graph's own
    Q/DQ semantics (every node run as written). Drift here is the runtime's rounding, not quantization; the gates
    already judge the optimised session, and this says how much of the INT8 loss is the runtime's."""
    parity = embedding_parity(OrtEmbedder(path, optimized=False), OrtEmbedder(path), images).to_dict()
    logger.info("ONNX Runtime optimised session vs the graph's Q/DQ semantics: min cosine %.5f, mean %.5f",
                parity["cosine_min"], parity["cosine_mean"])
    return parity


def summary_of(metrics: Dict[str, object]) -> Dict[str, float]:
    return {k: float(metrics[k]) for k in ("mAP", "rank1", "mINP") if isinstance(metrics.get(k), (int, float))}
