"""Per-node quantization sensitivity and the accuracy-aware fallback that keeps sensitive nodes (weighted layers,
element-wise joins: compressreid.quant.ptq.fallback_candidates) in FP32."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from tqdm import tqdm

from compressreid.engine.io import file_sha256
from compressreid.engine.progress import LoggedProgress
from compressreid.errors import ConfigError
from compressreid.quant.format import QuantFormat
from compressreid.quant.ptq import calibrate, quantize_ptq
from compressreid.quant.refine import NEAREST, Refinement, integer_weight_codes

logger = logging.getLogger(__name__)

# Quantize a pre-processed graph: (output path, nodes kept FP32, nodes to quantize alone) -> path.
Quantizer = Callable[[str, Sequence[str], Sequence[str]], str]
# Judge a quantized graph: path -> (metrics incl. mAP and cosine_mean, whether every gate passed); its ``metrics``
# method gives the metrics alone (compressreid.quant.judge.TargetJudge).
Judge = Callable[[str], Tuple[Dict[str, float], bool]]


@dataclass
class LayerSensitivity:
    """One judged file per node (a weighted layer or an element-wise join; how the file is made: ``SCANS``): its mAP
    drop and embedding cosine against the FP32 model."""

    layer: str
    mAP_drop: float
    cosine_mean: float

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def ptq_quantizer(prepared_path: str, batches, method: str, fmt: QuantFormat, percentile: float,
                  histogram_bins: int = 2048, cache: str = "", refinement: Refinement = NEAREST) -> Quantizer:
    """Quantizes any subset of layers in ``fmt`` with one calibration: ``cache`` (from ``calibrate`` on this graph),
    or calibrated here once (the ranges go to a cache beside the graph); each file refined by ``refinement``."""
    cache = cache or calibrate(prepared_path, batches, os.path.splitext(prepared_path)[0] + ".calibration.json",
                               method, percentile, histogram_bins)
    refinement = refinement.for_format(fmt.weight_bits)
    # GPTQ's codes of the all-INT8 model, computed once: every later quantization (one layer alone or all but one
    # for the sensitivity scan, all but a few for the fallback) reuses them instead of refining every layer again
    codes: Dict[str, np.ndarray] = {}

    def run(out_path: str, exclude: Sequence[str], only: Sequence[str], rounding: Refinement) -> str:
        return quantize_ptq(prepared_path, out_path, batches, method, fmt, percentile, exclude, only,
                            histogram_bins, calibration_cache=cache, refinement=rounding, weight_codes=codes)

    def quantize(out_path: str, exclude: Sequence[str] = (), only: Sequence[str] = ()) -> str:
        if refinement.weight_rounding == "nearest":
            return run(out_path, exclude, only, refinement)
        if not codes:
            full = out_path if not (exclude or only) else os.path.splitext(prepared_path)[0] + ".all_int8.onnx"
            codes.update(integer_weight_codes(onnx.load(run(full, (), (), refinement))))
            if full == out_path:
                return out_path
            os.remove(full)
        return run(out_path, exclude, only, replace(refinement, weight_rounding="nearest"))
    return quantize


RANK_BY = ("mAP", "cosine")
# How the sensitivity scan measures a node: "quantize_alone" (that node INT8, every other FP32: what quantizing it
# costs on its own) or "revert_alone" (that node FP32, every other INT8: what keeping it FP32 wins back from the
# all-INT8 model, the way NNCF's accuracy control ranks).
SCANS = ("quantize_alone", "revert_alone")


def check_ranking(rank_by: str, scan: str = "quantize_alone") -> None:
    """Raises ConfigError for an unknown QUANT.FALLBACK.RANK_BY or QUANT.FALLBACK.SCAN."""
    if rank_by not in RANK_BY:
        raise ConfigError(f"QUANT.FALLBACK.RANK_BY '{rank_by}' is unknown; expected one of {RANK_BY}")
    if scan not in SCANS:
        raise ConfigError(f"QUANT.FALLBACK.SCAN '{scan}' is unknown; expected one of {SCANS}")


def rank(results: Sequence[LayerSensitivity], rank_by: str = "mAP", scan: str = "quantize_alone"
         ) -> List[LayerSensitivity]:
    """The node to keep in FP32 first, by ``rank_by``: "mAP" (the judged file's mAP drop, the embedding cosine
    breaking the ties where mAP is coarse: many nodes tie at 0 on a small test set) or "cosine" (the judged file's
    embedding cosine to FP32 alone; the mAP drop breaks ties). Under ``scan`` "quantize_alone" the file quantized
    that node alone, so the worst file comes first; under "revert_alone" the file kept that node alone in FP32, so
    the best file comes first.

    Raises:
        ConfigError: an unknown ``rank_by`` or ``scan``.
    """
    check_ranking(rank_by, scan)
    sign = 1 if scan == "quantize_alone" else -1
    if rank_by == "cosine":
        return sorted(results, key=lambda s: (sign * s.cosine_mean, -sign * s.mAP_drop))
    return sorted(results, key=lambda s: (-sign * round(s.mAP_drop, 3), sign * s.cosine_mean))


def layer_sensitivity(nodes: Sequence[str], quantize: Quantizer, judge: Judge, fp32_map: float, workdir: str,
                      progress: bool = True, rank_by: str = "mAP", scan: str = "quantize_alone"
                      ) -> List[LayerSensitivity]:
    """Judge one file per node of ``nodes``: under ``scan`` "quantize_alone" that node alone quantized, under
    "revert_alone" every node but that one; each node's mAP drop and embedding cosine against FP32 are the file's.
    Returns them in the order the fallback keeps nodes in FP32 (:func:`rank`)."""
    check_ranking(rank_by, scan)
    results = []
    path = os.path.join(workdir, "sensitivity.onnx")
    what = "nodes quantized alone" if scan == "quantize_alone" else "nodes kept FP32 alone"
    logged = LoggedProgress(logger, "layer sensitivity", len(nodes), f"{what} and judged")
    for layer in tqdm(nodes, desc="layer sensitivity", unit="node", disable=not progress, dynamic_ncols=True,
                      leave=False):
        exclude, only = ((), (layer,)) if scan == "quantize_alone" else ((layer,), ())
        metrics = judge.metrics(quantize(path, exclude, only))
        results.append(LayerSensitivity(layer, fp32_map - metrics["mAP"], metrics["cosine_mean"]))
        logged.step()
    if os.path.exists(path):
        os.remove(path)
    return rank(results, rank_by, scan)


# A failed fallback that recovered less than this share of the all-INT8 model's embedding error (1 - cosine mean)
# is reported as error spread over the graph, which only a much larger FP32 node budget fixes, if any (a hint, not
# a gate; MobileNetV3-small, README INT8 step 4: 6 nodes won back 6 % of the gap, 16 nodes passed).
SPREAD_RECOVERED_SHARE = 0.25


def spread_diagnosis(ranking: Sequence[LayerSensitivity], all_int8: Dict[str, float],
                     tried: Sequence[Dict[str, object]], scan: str = "quantize_alone") -> Optional[Dict[str, float]]:
    """When the fallback failed because the INT8 error is spread over many nodes: no single node holds half of the
    all-INT8 model's embedding error (under ``scan`` "quantize_alone", each node quantized alone keeps the
    embedding close to FP32 while all together do not; under "revert_alone", no node kept FP32 alone wins half of
    it back), and the FP32 nodes tried won back little of it. Returns the numbers that show it (None when the error
    sat in a few nodes, or nothing was measured)."""
    if not ranking or not tried or "cosine_mean" not in all_int8:
        return None
    base = float(all_int8["cosine_mean"])
    gap = 1.0 - base
    recovered = max(float(t["cosine_mean"]) for t in tried) - base
    if scan == "quantize_alone":
        worst_single = min(s.cosine_mean for s in ranking)
        held_by_one = 1.0 - worst_single >= gap / 2
        single = {"worst_single_node_cosine_mean": worst_single}
    else:
        best_single = max(s.cosine_mean for s in ranking)
        held_by_one = best_single - base >= gap / 2
        single = {"best_single_fp32_node_cosine_mean": best_single}
    if gap <= 0 or recovered >= SPREAD_RECOVERED_SHARE * gap or held_by_one:
        return None
    return {"all_int8_cosine_mean": base, **single, "recovered_cosine": recovered, "recovered_share": recovered / gap}


@dataclass
class FallbackOutcome:
    path: str  # "" when the model with no FP32 layer is the one to keep
    fp32_layers: List[str]
    metrics: Dict[str, float]
    passed: bool
    tried: List[Dict[str, object]]
    no_effect: List[str] = field(default_factory=list)  # nodes tried but not kept: in FP32 they changed nothing


# Judgements the fallback may spend per node of its budget (nodes that change no metric are judged but not kept).
JUDGED_PER_NODE = 3


def _same(a: Dict[str, float], b: Optional[Dict[str, float]]) -> bool:
    """Whether two judgements measured the very same numbers: every metric both report, mAP and cosine at least."""
    if b is None:
        return False
    common = [k for k in a.keys() & b.keys() if isinstance(a[k], (int, float)) and isinstance(b[k], (int, float))]
    return {"mAP", "cosine_mean"} <= set(common) and all(a[k] == b[k] for k in common)


def _best(tried: List[Dict[str, object]], all_int8: Optional[Dict[str, float]]) -> Dict[str, object]:
    """The attempt to leave behind when none passed: highest mAP, then cosine; the all-INT8 model competes too."""
    best = max(tried + ([{"fp32_layers": [], **all_int8}] if all_int8 else []),
               key=lambda t: (t["mAP"], t["cosine_mean"]))
    if best is not tried[-1]:
        logger.info("fallback: no count passes; keeping the best, %d node(s) in FP32 (mAP %.2f)",
                    len(best["fp32_layers"]), best["mAP"])
    return best


def accuracy_aware_fallback(ranking: Sequence[LayerSensitivity], quantize: Quantizer, judge: Judge, out_path: str,
                            max_fp32_layers: int, all_int8: Optional[Dict[str, float]] = None, all_int8_path: str = ""
                            ) -> Optional[FallbackOutcome]:
    """Keep the most sensitive nodes in FP32, one more at a time in ranking order, until the gates pass or
    ``max_fp32_layers`` nodes are kept.

    A node that changes nothing in FP32 is not kept and takes no place in the budget: when the file comes out as
    one already made (the previous attempt's, or ``all_int8_path``'s), it is not judged; when the gates measure the
    very same numbers as for the model before it (``all_int8``'s metrics for the first), it is judged once and
    dropped. Such nodes exist: MobileNetV3's h-swish Mul, whose product is requantized for the next convolution
    either way. The fallback judges at most ``JUDGED_PER_NODE`` models per node of its budget.

    Returns the passing model; when none passes, the best tried (highest mAP, then cosine: what a user reading the
    rejected file would want, and not always the last: one more FP32 node can cost on a small test set), made
    again unless it is the file on disk, or an outcome without a path when ``all_int8`` (the metrics of the model
    with no FP32 node) beats every attempt; None when nothing was tried.
    """
    tried: List[Dict[str, object]] = []
    kept: List[str] = []
    no_effect: List[str] = []
    kept_digest = file_sha256(all_int8_path) if all_int8_path else ""
    seen = {kept_digest} - {""}
    on_disk: List[str] = []  # the FP32 nodes of a model whose file is byte for byte the one at out_path
    previous, judged = all_int8, 0
    for sensitivity in ranking:
        if len(kept) >= max_fp32_layers:
            break
        if judged >= JUDGED_PER_NODE * max_fp32_layers:
            logger.info("fallback: %d models judged, %d of them changed no metric; stopping", judged, len(no_effect))
            break
        trial = kept + [sensitivity.layer]
        path = quantize(out_path, trial, ())
        digest = file_sha256(path)
        on_disk = kept if digest == kept_digest else trial
        if digest in seen:
            logger.info("fallback: %s in FP32 leaves the file unchanged; not kept", sensitivity.layer)
            no_effect.append(sensitivity.layer)
            continue
        seen.add(digest)
        metrics, passed = judge(path)
        judged += 1
        if not passed and _same(metrics, previous):
            logger.info("fallback: %s in FP32 changes no metric; not kept", sensitivity.layer)
            no_effect.append(sensitivity.layer)
            continue
        kept, kept_digest, previous = trial, digest, metrics
        tried.append({"fp32_layers": kept, "mAP": metrics["mAP"], "cosine_mean": metrics["cosine_mean"],
                      "passed": passed})
        logger.info("fallback: %d node(s) in FP32 -> mAP %.2f, cosine %.4f, gates %s", len(kept), metrics["mAP"],
                    metrics["cosine_mean"], "pass" if passed else "fail")
        if passed:
            return FallbackOutcome(out_path, kept, metrics, True, tried, no_effect)
    if not tried:
        return None
    best = _best(tried, all_int8)
    path = out_path
    if best["fp32_layers"] != on_disk:
        path = quantize(out_path, best["fp32_layers"], ()) if best["fp32_layers"] else ""
    return FallbackOutcome(path, list(best["fp32_layers"]), {"mAP": best["mAP"], "cosine_mean": best["cosine_mean"]},
                           False, tried, no_effect)


@dataclass
class FallbackSearch:
    """One rounding's fallback search, as the quantize run keeps it: its record (metrics.json's ``fallback``), the
    file it leaves and that file's metrics (mAP and cosine at least)."""

    rounding: str
    record: Dict[str, object]
    path: str
    metrics: Dict[str, float]

    @property
    def passed(self) -> bool:
        tried = self.record.get("tried") or []
        return bool(tried and tried[-1]["passed"])


def kept_search(searches: Sequence[FallbackSearch]) -> FallbackSearch:
    """Of the searches run one rounding after the other (each until one passes), the one whose file the run keeps:
    the passing one, else the one that left the best model (highest mAP, then cosine), not merely the last."""
    if searches[-1].passed:
        return searches[-1]
    return max(searches, key=lambda s: (s.metrics["mAP"], s.metrics["cosine_mean"]))
