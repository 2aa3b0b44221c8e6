"""One quantization run: FP32 export with parity, INT8 by PTQ or QAT for every deployment target (QUANT.TARGETS),
each target's file judged in its own runtime by the stage's gates and the target's own rules, per-target FP32
fallback, the files and one model card.

What is measured is what ships: every INT8 metric comes from the ONNX file that is written, run in the runtime of
its target (or, where this machine cannot run that runtime, on the file's own Q/DQ semantics, and the card says so).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple

import onnx
from torch import nn
from yacs.config import CfgNode

from compressreid.data.build import load_test_sets
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.source_run import load_source_model
from compressreid.engine.verdict import Verdict
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.evaluation.report import metrics_payload, write_plots
from compressreid.export.conventions import ConventionAdapter, InputConvention, get_convention
from compressreid.export.cpu import this_kind
from compressreid.export.model_card import build_model_card, write_model_card
from compressreid.export.onnx_export import export_onnx
from compressreid.export.ort_model import OrtEmbedder
from compressreid.export.parity import check_export_parity
from compressreid.quant.calibration import calibration_batches
from compressreid.quant.compare import (Embedded, TestImages, evaluate_cached, load_test_images, quantization_parity,
                                        summary, threshold_shifts)
from compressreid.quant.fallback import (FallbackSearch, accuracy_aware_fallback, kept_search, layer_sensitivity,
                                         ptq_quantizer, spread_diagnosis)
from compressreid.quant.judge import QDQ_SEMANTICS, TargetJudge, in_convention
from compressreid.quant.outcome import FP32_FILE, TargetOutcome, card_entries, fp32_entry, run_payload
from compressreid.quant.plan import QuantPlan, check_quantize_inputs, quantize_verdict
from compressreid.quant.ptq import calibrate, fallback_candidates, preprocess
from compressreid.quant.refine import Refinement, refinement_of
from compressreid.quant.revert import qdq_reverter, reversible_nodes
from compressreid.quant.speed import (SpeedPolicy, shipping_decision, slower_batches, time_against_fp32,
                                      time_alone)
from compressreid.quant.targets import QuantTarget

logger = logging.getLogger(__name__)

SHIPPED = "student_int8.onnx"  # the primary target's file (QUANT.TARGETS[0])
REJECTED = "student_int8.rejected.onnx"
CARD_FILE = "model_card.json"

__all__ = ["CARD_FILE", "FP32_FILE", "REJECTED", "SHIPPED", "check_quantize_inputs", "quantize_verdict",
           "run_quantize"]


class _Graphs:
    """The FP32 graph, its pre-processed form and PTQ quantizers per input convention and format, each made once
    (one calibration per convention: the ranges do not depend on the format)."""

    def __init__(self, cfg: CfgNode, plan: QuantPlan, model: Optional[nn.Module], fp32_path: str, workdir: str,
                 batches):
        self.cfg, self.plan, self.model, self.workdir, self.batches = cfg, plan, model, workdir, batches
        self.fp32 = {plan.source_convention: fp32_path}
        self.prepared: Dict[str, Tuple[str, str]] = {}
        self.quantizers: Dict[Tuple[str, object], object] = {}

    def fp32_graph(self, convention: InputConvention) -> str:
        if convention.name not in self.fp32:
            path = os.path.join(self.workdir, f"fp32_{convention.name}.onnx")
            export_onnx(ConventionAdapter(self.model, convention), path, self.plan.input_size, self.cfg.QUANT.OPSET)
            self.fp32[convention.name] = path
        return self.fp32[convention.name]

    def _prepared(self, convention: InputConvention) -> Tuple[str, str]:
        if convention.name not in self.prepared:
            c = self.cfg.QUANT.CALIBRATION
            prepared = preprocess(self.fp32_graph(convention),
                                  os.path.join(self.workdir, f"prepared_{convention.name}.onnx"))
            batches = [convention.from_rgb255(b) for b in self.batches]  # the first layer sees what it will see
            cache = calibrate(prepared, batches, os.path.splitext(prepared)[0] + ".calibration.json", c.METHOD,
                              c.PERCENTILE, c.HISTOGRAM_BINS)
            self.prepared[convention.name] = (prepared, cache)
        return self.prepared[convention.name]

    def quantizer(self, target: QuantTarget, refinement: Refinement):
        """(pre-processed graph, quantize(out, exclude, only)) for the target's convention and format, refined by
        ``refinement``."""
        prepared, cache = self._prepared(target.convention)
        key = (target.convention.name, target.fmt, refinement)
        if key not in self.quantizers:
            c = self.cfg.QUANT.CALIBRATION
            batches = [target.convention.from_rgb255(b) for b in self.batches]
            self.quantizers[key] = ptq_quantizer(prepared, batches, c.METHOD, target.fmt, c.PERCENTILE,
                                                 c.HISTOGRAM_BINS, cache=cache, refinement=refinement)
        return prepared, self.quantizers[key]


def _export_fp32(plan: QuantPlan, fp32_path: str, opset: int, images: TestImages) -> Tuple[Optional[nn.Module], Dict]:
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
    info: Dict[str, object] = {"method": q.METHOD, "format": "QDQ"}
    if q.METHOD == "ptq":
        info["calibration"] = {"split": "train", "images": sum(len(b) for b in batches),
                               "method": q.CALIBRATION.METHOD, "seed": cfg.SEED,
                               **({"percentile": q.CALIBRATION.PERCENTILE}
                                  if q.CALIBRATION.METHOD == "percentile" else {}),
                               **({"histogram_bins": q.CALIBRATION.HISTOGRAM_BINS}
                                  if q.CALIBRATION.METHOD != "minmax" else {})}
        info["refinement"] = refinement_of(cfg).describe()
    return info


def _fallback(cfg: CfgNode, candidates: Sequence[str], quantize, judge: TargetJudge, fp32_map: float, out_path: str,
              first: Dict[str, float], all_int8_path: str, progress: bool, scan: str = ""
              ) -> Tuple[Optional[str], Dict[str, object], Dict[str, float]]:
    """Sensitivity analysis over ``candidates`` (QUANT.FALLBACK.SCAN unless ``scan``) and FP32 fallback from the
    all-INT8 file ``all_int8_path`` (metrics ``first``) to ``out_path``; returns the fallback model (None if nothing
    tried or the all-INT8 model is the best), its record and the metrics of the model it leaves (mAP and cosine at
    least)."""
    workdir = os.path.dirname(out_path)
    logger.warning("%s: INT8 model fails its gates (%s): measuring per-node sensitivity for the FP32 fallback",
                   judge.target.name, {k: round(v, 4) for k, v in first.items() if k in ("mAP", "cosine_mean")})
    scan = scan or cfg.QUANT.FALLBACK.SCAN
    ranking = layer_sensitivity(candidates, quantize, judge, fp32_map, workdir, progress, cfg.QUANT.FALLBACK.RANK_BY,
                                scan)
    outcome = accuracy_aware_fallback(ranking, quantize, judge, out_path, cfg.QUANT.FALLBACK.MAX_FP32_LAYERS, first,
                                      all_int8_path)
    record: Dict[str, object] = {"used": True, "scan": scan, "sensitivity": [s.to_dict() for s in ranking],
                                 "tried": outcome.tried if outcome else [], "full_int8": first}
    if outcome is None:
        return None, record, first
    record["fp32_layers"] = outcome.fp32_layers
    record["no_effect"] = outcome.no_effect
    spread = None if outcome.passed else spread_diagnosis(ranking, first, outcome.tried, scan)
    if spread:
        record["spread"] = spread
        single = (f"each node quantized alone keeps cosine >= {spread['worst_single_node_cosine_mean']:.4f} to FP32"
                  if scan == "quantize_alone" else
                  f"no node kept FP32 alone lifts cosine above {spread['best_single_fp32_node_cosine_mean']:.4f}")
        qat = ("" if cfg.QUANT.METHOD == "qat" else ": QAT (QUANT.METHOD qat, e.g. configs/synthetic/qat_student.yml) "
               "trains the model for the INT8 grid and keeps every node INT8")
        logger.warning("%s: the INT8 error is spread over the graph, not held by a few nodes: %s, all INT8 %.4f, and "
                       "%d FP32 node(s) won back %.0f %% of the gap; passing may take many more FP32 nodes (a larger "
                       "QUANT.FALLBACK.MAX_FP32_LAYERS), each at FP32 speed%s", judge.target.name, single,
                       spread["all_int8_cosine_mean"], max(len(t["fp32_layers"]) for t in outcome.tried),
                       100 * spread["recovered_share"], qat)
    return outcome.path or None, record, outcome.metrics


class _Run:
    """The state one quantize run shares between its targets."""

    def __init__(self, cfg: CfgNode, run: RunDirectory, progress: bool, plan: QuantPlan, verdict: Verdict):
        self.cfg, self.run, self.progress, self.plan, self.verdict = cfg, run, progress, plan, verdict
        self.eval_cfg = cfg.clone()
        self.eval_cfg.defrost()
        self.eval_cfg.INPUT.SIZE_TEST = list(self.plan.input_size)
        self.eval_cfg.freeze()
        self.workdir, self.fp32_path = run.file("work"), run.file(FP32_FILE)
        os.makedirs(self.workdir, exist_ok=True)
        self.images = [load_test_images(self.eval_cfg, t) for t in load_test_sets(self.eval_cfg)]
        self.model, self.export_parity = _export_fp32(self.plan, self.fp32_path, cfg.QUANT.OPSET, self.images[0])
        self.evaluator = ReIDEvaluator.from_config(self.eval_cfg)
        source_convention = get_convention(self.plan.source_convention)
        fp32_model = OrtEmbedder(self.fp32_path)
        self.fp32 = [evaluate_cached(self.evaluator, fp32_model, in_convention(im, source_convention))
                     for im in self.images]
        logger.info("FP32 (ONNX Runtime): %s", summary(self.fp32[0].result))
        identical = {"cosine_mean": 1.0, "cosine_min": 1.0, "top10_overlap": 100.0}
        fp32_payload = metrics_payload([e.result for e in self.fp32], FP32_FILE)
        self.references: Dict[str, Dict[str, object]] = {
            **self.plan.references, "fp32": {**fp32_payload, **identical,
                                             "datasets": {k: {**v, **identical} for k, v in
                                                          fp32_payload["datasets"].items()}}}
        q = cfg.QUANT
        self.batches = calibration_batches(self.eval_cfg, q.CALIBRATION.NUM_IMAGES, q.CALIBRATION.BATCH_SIZE, cfg.SEED)
        self.fixed: Dict[str, float] = {}
        if "mAP" in self.plan.references.get("source", {}):
            # the FP32 export of the model loaded here, scored by the same evaluator on the same data, must
            # reproduce what the source stage measured: otherwise this is not the model that stage handed over
            self.fixed["source_mAP_delta"] = abs(self.fp32_map - self.plan.references["source"]["mAP"])
        self.graphs = _Graphs(cfg, self.plan, self.model, self.fp32_path, self.workdir, self.batches)
        self.speed = SpeedPolicy.from_config(q.BENCHMARK)
        self.method_info = _method_info(cfg, self.batches)
        self.qat_files: Dict[str, str] = {}
        self.judges: Dict[str, TargetJudge] = {}

    def judge(self, target: QuantTarget) -> TargetJudge:
        """The target's judge, made once (it holds the first test set in the target's input convention)."""
        if target.name not in self.judges:
            self.judges[target.name] = TargetJudge(target, self.verdict, self.evaluator, self.images[0], self.fp32[0],
                                                   self.references, self.fixed, self.cfg.TEST.METRIC)
        return self.judges[target.name]

    def train_qat(self) -> None:
        """QAT once, in the targets' one format; its QDQ export per input convention the targets need."""
        from compressreid.quant.qat import export_qat, run_qat  # torch training only when asked for

        target = self.plan.targets[0]
        outcome = run_qat(self.cfg, self.eval_cfg, self.plan.source, target.fmt, self.judge(target), self.batches,
                          self.run, self.progress)
        parity = {}
        for convention in dict.fromkeys(t.convention for t in self.plan.targets):
            path = os.path.join(self.workdir, f"int8_qat_{convention.name}.onnx")
            parity[convention.name] = export_qat(outcome.model, path, self.plan.input_size, self.cfg.QUANT.OPSET,
                                                 convention, self.images[0].q_images[:64])
            self.qat_files[convention.name] = path
        self.references["fake_quant"] = outcome.fake_quant_metrics
        self.method_info.update(outcome.info)
        # ONNX Runtime's kernels vs the PyTorch integer model, for the primary target's file
        self.method_info["qat"]["ort_parity"] = parity[target.convention.name]

    def quantize_target(self, target: QuantTarget, primary: bool) -> TargetOutcome:
        q = self.cfg.QUANT
        judge = self.judge(target)
        full_int8 = os.path.join(self.workdir, f"int8_full_{target.name}.onnx")
        roundings = []  # (name, prepared graph, quantizer) in order of preference; QAT: none (its fallback reverts)
        if self.plan.method == "qat":
            shutil.copyfile(self.qat_files[target.convention.name], full_int8)
        else:
            roundings = self._roundings(target)
            roundings[0][2](full_int8)
        candidate, fallback = full_int8, {"used": False}
        int8 = judge.evaluate(full_int8)
        first = judge.full_metrics(full_int8, int8)
        tried = {roundings[0][0]: first} if len(roundings) > 1 else {}
        shipped = roundings[0][0] if roundings else ""
        files = {shipped: full_int8}  # each rounding's all-INT8 file
        for name, _, quantize in roundings[1:]:  # "auto": the other rounding's all-INT8 file, before any FP32 layer
            if judge.passes(first):
                break
            path = files[name] = quantize(os.path.join(self.workdir, f"int8_{name}_{target.name}.onnx"))
            alt_int8 = judge.evaluate(path)
            tried[name] = judge.full_metrics(path, alt_int8)
            logger.warning("%s: the %s-rounded INT8 model fails its gates (mAP %.2f); %s rounding: mAP %.2f, gates %s",
                           target.name, roundings[0][0], first["mAP"], name, tried[name]["mAP"],
                           "pass" if judge.passes(tried[name]) else "fail")
            if judge.passes(tried[name]):
                shutil.move(path, full_int8)
                int8, first, shipped = alt_int8, judge.full_metrics(full_int8, alt_int8), name
        if not judge.passes(first) and q.FALLBACK.ENABLED and judge.fallback_can_help(first):
            if roundings:
                shipped, fallback, candidate = self._ptq_fallback(target, judge, roundings, tried, files, first,
                                                                  full_int8)
            else:  # QAT: no FP32 graph to quantize again with nodes left out; its file's nodes are put back in float
                path, fallback, _ = _fallback(
                    self.cfg, reversible_nodes(onnx.load(full_int8)), qdq_reverter(full_int8), judge, self.fp32_map,
                    os.path.join(self.workdir, f"int8_fallback_qat_{target.name}.onnx"), first, full_int8,
                    self.progress, scan="revert_alone")
                candidate = path or full_int8
        if len(tried) > 1:  # the preferred rounding failed and the other one was judged
            fallback["weight_rounding"] = {"all_int8": {name: {k: m[k] for k in ("mAP", "cosine_mean") if k in m}
                                                        for name, m in tried.items()}, "shipped": shipped}
        # the file that ships was judged above unless the fallback replaced it
        judged_first = (int8, first) if candidate == full_int8 else None
        return self._judged(target, primary, judge, candidate, full_int8, fallback, judged_first)

    def _ptq_fallback(self, target: QuantTarget, judge: TargetJudge, roundings, tried: Dict[str, Dict[str, float]],
                      files: Dict[str, str], first: Dict[str, float], full_int8: str
                      ) -> Tuple[str, Dict[str, object], str]:
        """The FP32 fallback in each rounding until one passes (``files``: each rounding's all-INT8 file, ``tried``
        their metrics); returns the kept search's rounding, record and file."""
        searches = []
        for name, prepared, quantize in roundings:
            out = os.path.join(self.workdir, f"int8_fallback_{name}_{target.name}.onnx")
            path, record, left = _fallback(self.cfg, fallback_candidates(prepared, target.fmt), quantize, judge,
                                           self.fp32_map, out, tried.get(name, first),
                                           files.get(name, ""), self.progress)
            searches.append(FallbackSearch(name, record, path or files.get(name, full_int8), left))
            if searches[-1].passed:
                break
        kept = kept_search(searches)
        if len(searches) > 1:  # what each rounding's search left, the kept one among them
            kept.record["searches"] = {s.rounding: {k: s.metrics[k] for k in ("mAP", "cosine_mean")} for s in searches}
        return kept.rounding, kept.record, kept.path

    def _roundings(self, target: QuantTarget) -> List[Tuple[str, str, object]]:
        """(rounding, pre-processed graph, quantizer) to try for the target, preferred first: the configured one,
        and for "auto" resolved to GPTQ also nearest rounding, so "auto" accepts whatever nearest rounding would."""
        asked = refinement_of(self.cfg)
        names = [asked.for_format(target.fmt.weight_bits).weight_rounding]
        if asked.weight_rounding == "auto" and names[0] != "nearest":
            names.append("nearest")
        return [(name, *self.graphs.quantizer(target, replace(asked, weight_rounding=name))) for name in names]

    def _judged(self, target: QuantTarget, primary: bool, judge: TargetJudge, candidate: str, full_int8: str,
                fallback: Dict[str, object], judged_first: Optional[Tuple[Embedded, Dict[str, float]]] = None
                ) -> TargetOutcome:
        """Every test set's metrics of ``candidate`` (the first set's from ``judged_first`` when given), its gate
        decisions, latency and certification, and the packaged files."""
        if judged_first is None:
            int8 = judge.evaluate(candidate)
            judged_first = (int8, judge.full_metrics(candidate, int8))
        first, metrics = judged_first
        embedded = [first]
        if len(self.images) > 1:
            model = target.judged_model(candidate)
            embedded += [evaluate_cached(self.evaluator, model, in_convention(im, target.convention))
                         for im in self.images[1:]]
        payload = metrics_payload([e.result for e in embedded], os.path.basename(candidate))
        for fp32, int8 in zip(self.fp32, embedded):  # agreement with FP32 on every test set, not only the first
            payload["datasets"][int8.result.dataset].update(quantization_parity(fp32, int8, self.cfg.TEST.METRIC))
            payload["datasets"][int8.result.dataset].update(threshold_shifts(fp32.result.metrics, int8.result.metrics))
        payload.update({k: v for k, v in metrics.items() if k not in payload})
        decisions = judge.decide(payload)
        accepted = all(d.passed for d in decisions)
        # with the fallback's file, the all-INT8 one it started from: what keeping layers in FP32 cost
        latency = self._latency(target, candidate, full_int8 if candidate != full_int8 else "")
        shipping = shipping_decision(self.speed, latency, accepted)
        slower = slower_batches(latency)
        if slower and shipping["ships"] == "int8":
            logger.warning("%s: the INT8 file ran slower here than the FP32 file in %s at batch %s (%s) at %dx%d; "
                           "time both at your deployment size and batch (benchmarks/runtime_speed.py) before "
                           "shipping INT8 for speed%s", target.name, target.runtime, ", ".join(slower),
                           ", ".join(f"{v:.2f}x" for v in slower.values()), *self.plan.input_size,
                           "; it was slower in every round at the deployment batch and ships as INT8 because "
                           "QUANT.BENCHMARK.WHEN_SLOWER is warn (ship_fp32, the default, ships the FP32 model then)"
                           if shipping["int8_vs_fp32"] == "slower" and accepted else "")
        certification = target.certification(metrics, judge.measured)
        _remove_stale(target, self.run.path, primary)
        files = target.package(candidate, self.run.path, primary, accepted)
        payload["model"] = os.path.basename(files[0])
        fp32_files = []
        if shipping["ships"] == "fp32":
            fp32_files = target.package(self.graphs.fp32_graph(target.convention), self.run.path, primary, True,
                                        precision="fp32")
            logger.warning("%s: shipping the FP32 model %s: the INT8 file (accepted, kept as %s) ran slower than FP32 "
                           "at batch %d in every timing round (%.2fx, rounds %.2f-%.2fx) in %s on this CPU",
                           target.name, os.path.basename(fp32_files[0]), os.path.basename(files[0]),
                           shipping["deploy_batch"], shipping["speedup"], *shipping["speedup_range"], target.runtime)
        logger.info("%s INT8 %s: mAP %.2f (FP32 %.2f%s), Rank-1 %.2f (FP32 %.2f%s), cosine mean %.4f, runtime vs "
                    "Q/DQ cosine min %s%s; %s", target.name, "accepted" if accepted else "REJECTED", metrics["mAP"],
                    self.fp32_map,
                    f"; drop SE {metrics['mAP_drop_se']:.2f}" if "mAP_drop_se" in metrics else "",
                    metrics["rank1"], self.fp32[0].result.metrics["rank1"],
                    f"; {metrics['rank1_lost']:.0f} queries lost, {metrics['rank1_gained']:.0f} gained, drop SE "
                    f"{metrics['rank1_drop_se']:.2f}" if "rank1_lost" in metrics else "", metrics["cosine_mean"],
                    f"{metrics['runtime_cosine_min']:.4f} / mean {metrics['runtime_cosine_mean']:.4f}, further "
                    f"from FP32 by {metrics['runtime_fp32_gap']:+.4f}" if "runtime_cosine_min" in metrics else "n/a",
                    f" (the file's Q/DQ semantics: mAP {metrics[QDQ_SEMANTICS]['mAP']:.2f}, judged against "
                    f"{', '.join(judge.graph_references())})" if QDQ_SEMANTICS in metrics else "",
                    "; ".join(f"{k}: {'holds' if v['holds'] else 'NOT proven'}"
                              f"{'' if v['claimed'] else ' (not claimed)'}" for k, v in certification.items()))
        return TargetOutcome(target, primary, files, accepted, metrics, [e.result for e in embedded], payload,
                             decisions,
                             fallback, latency, certification, os.path.getsize(files[0]),
                             {"runtime": target.runtime_note() if judge.measured else "not run here: judged on the "
                              "graph's Q/DQ semantics (ONNX Runtime, node by node)"}, shipping, fp32_files)

    @property
    def fp32_map(self) -> float:
        """The FP32 model's mAP on the first test set (the fallback's and the log's reference)."""
        return float(self.fp32[0].result.metrics["mAP"])

    def fp32_latency(self) -> Dict[str, Dict[str, float]]:
        """The FP32 file alone in ONNX Runtime: the run's FP32 latency where the primary target's file was not timed
        against it (a runtime that does not run here, or one standing in for another CPU)."""
        return time_alone(self.speed, OrtEmbedder(self.fp32_path, self.speed.threads), self.plan.input_size,
                          get_convention(self.plan.source_convention))

    def _latency(self, target: QuantTarget, path: str, without_fallback: str = "") -> Dict[str, object]:
        """The INT8 file's latency in the target's runtime, timed in turn with the FP32 file in that runtime (so
        the speed-ups compare like with like) and, when given, the all-INT8 file ``without_fallback`` (in the same
        rounds); alone where the runtime here stands in for the target's CPU (ort_vnni's exact-accumulation kernels
        on a CPU without VNNI: its times are not the target's), nothing where the runtime does not run here
        (TensorRT)."""
        threads, size, convention = self.speed.threads, self.plan.input_size, target.convention
        model = target.runtime_model(path, threads)
        also = {"int8_without_fallback": target.runtime_model(without_fallback, threads)} if without_fallback else {}
        if model is None or target.measured_kind() != this_kind():
            return {name: time_alone(self.speed, m, size, convention) for name, m in {"int8": model, **also}.items()}
        fp32 = self.graphs.fp32_graph(convention)  # what the target ships if INT8 is slower
        return time_against_fp32(self.speed, model, target.runtime_model(fp32, threads), size, convention, convention,
                                 also)


def _remove_stale(target: QuantTarget, folder: str, primary: bool) -> None:
    """Delete the files (shipped or rejected) this target may have written into ``folder``."""
    for path in target.stale_files(folder, primary):
        if os.path.exists(path):
            os.remove(path)


def run_quantize(cfg: CfgNode, run: RunDirectory, progress: bool = True, plan: Optional[QuantPlan] = None,
                 verdict: Optional[Verdict] = None) -> Dict[str, object]:
    """Quantize QUANT.SOURCE to INT8 for every QUANT.TARGETS entry, judge each file in its runtime against the FP32
    model, write the files and their model card.

    Each target's file is shipped (``student_int8.onnx`` for the first, ``student_int8.<target>.onnx`` for the
    others) when its gates pass, written with ``.rejected`` in its name otherwise; a target that fails is rejected
    alone. Where an accepted file ran slower than FP32 in every timing round at QUANT.BENCHMARK.DEPLOY_BATCH, the
    target ships ``student_fp32.<target>.onnx`` instead and keeps the INT8 file (WHEN_SLOWER ship_fp32, the
    default).

    Args:
        plan, verdict: the checked inputs and the stage's gates when the caller made them before OUTPUT_DIR was
            touched (the tool and the pipeline do); made here otherwise.

    Raises:
        GateFailed: a target's gate failed after fallback (metrics.json, card and files are written).
    """
    plan = plan or check_quantize_inputs(cfg)
    state = _Run(cfg, run, progress, plan, verdict or quantize_verdict(cfg, plan))
    if state.plan.method == "qat":
        state.train_qat()
    try:
        outcomes = [state.quantize_target(t, i == 0) for i, t in enumerate(state.plan.targets)]
    except BaseException:
        # a later target that cannot run (its runtime refuses the file) or an interrupt: no earlier target's file
        # stays behind looking shipped in a run that has no metrics and no card
        for i, target in enumerate(state.plan.targets):
            _remove_stale(target, run.path, i == 0)
        raise
    payload = run_payload(state, outcomes)
    entries = [entry for o in outcomes for entry in card_entries(o, state)]
    main = outcomes[0]
    card = build_model_card(
        main.shipped, state.plan.input_size, entries[0]["metrics"], entries[0]["gates"], main.accepted,
        main.latency, payload["quantization"], state.plan.source.label if state.plan.source else state.plan.onnx_source,
        main.target.convention, entries[0]["target"], entries[1:])
    write_model_card(run.file(CARD_FILE), {**card, "shipping": entries[0]["shipping"],
                                          "fp32_source": fp32_entry(state)})
    write_plots(main.results[0], run.file("plots"), "INT8", cfg.TEST.WORST_QUERIES)
    shutil.rmtree(state.workdir, ignore_errors=True)
    state.verdict(run, payload, [state.judge(o.target).judged(o.payload) for o in outcomes])
    return payload
