"""Judge an INT8 file of one target: run it in the target's runtime on the query/gallery (fed in the target's input
convention) against the FP32 model, measure how far the runtime lands from the file's Q/DQ semantics and how close
its accumulations come to each CPU kind's limit, and check the stage's gates plus the target's own rules.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.export.conventions import InputConvention
from compressreid.export.parity import parity_of
from compressreid.export.tensorrt_check import TRT_CHECKS
from compressreid.gates import GateDecision, Judged, Measurement
from compressreid.quant.compare import (MAP_DROP_METRICS, RANK1_FLIP_METRICS, Embedded, TestImages, embed_images,
                                        evaluate_cached, quantization_parity)
from compressreid.quant.saturation import accumulation_bounds
from compressreid.quant.targets.base import QuantTarget

logger = logging.getLogger(__name__)

# Query images on which runtime and Q/DQ semantics are compared (node-by-node execution is slow).
RUNTIME_PARITY_IMAGES = 64
# The target rules on how the runtime here computes the file that a layer kept in FP32 can change (not
# runtime_float_layers: a runtime running integer layers in float is not fixed by fewer integer layers).
RUNTIME_PARITY_METRICS = ("runtime_cosine_mean", "runtime_cosine_min", "runtime_fp32_gap")
# References that describe the file's own graph rather than another model (QAT's fake-quant model, which the file is
# exported from). Where the target's runtime re-fuses the graph (QuantTarget.executes_graph False), rules naming them
# are checked on the file's Q/DQ semantics, and the runtime is held to those semantics by the target's parity rules.
GRAPH_REFERENCES = ("fake_quant",)
# Key of a file's metrics that holds its Q/DQ semantics' evaluation (first test set), where measured.
QDQ_SEMANTICS = "qdq_semantics"
QDQ_SEMANTICS_LABEL = "the file's Q/DQ semantics"
# What a quantize run reports for each target's file besides its evaluation (gate-able names).
QUANT_METRICS = ("cosine_mean", "cosine_min", "top10_overlap", *RANK1_FLIP_METRICS, *MAP_DROP_METRICS,
                 "runtime_cosine_mean", "runtime_cosine_min", "runtime_fp32_gap", "runtime_int8_layers",
                 "runtime_float_layers", "runtime_parity_images", "u8s8_pair_sum_max", "s8s8_pair_sum_max",
                 "dot_sum_max", "integer_layers", *TRT_CHECKS)


def numbers(data: Mapping[str, object]) -> Dict[str, float]:
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def in_convention(images: TestImages, convention: InputConvention) -> TestImages:
    """The test images as a caller of a file in ``convention`` feeds them."""
    return TestImages(images.name, convention.from_rgb255(images.q_images), images.q_records,
                      convention.from_rgb255(images.g_images), images.g_records)


class TargetJudge:
    """Evaluates candidate files of one target against the FP32 model and checks every rule that applies.

    Args:
        verdict: the stage's gates (TEST.GATES, parsed once; the built-in checks); the target's own rules are added.
        images: the first test set in RGB 0..255 (converted to the target's convention here).
        references: the payloads gates may name (fp32, source, teacher, fake_quant).
        fixed: metrics of the FP32 source, the same for every candidate (``source_mAP_delta``).
    """

    def __init__(self, target: QuantTarget, verdict, evaluator: ReIDEvaluator, images: TestImages,
                 fp32: Embedded, references: Dict[str, Dict[str, object]], fixed: Dict[str, float],
                 metric: str = "cosine", threads: int = 0):
        self.target, self.evaluator, self.fp32, self.references, self.fixed = target, evaluator, fp32, references, fixed
        self.verdict = verdict
        self.images = in_convention(images, target.convention)
        self.metric, self.threads = metric, threads
        self.measured = target.measured_kind()
        self.rules: List[str] = target.rules(self.measured is not None)

    def evaluate(self, path: str) -> Embedded:
        return evaluate_cached(self.evaluator, self.target.judged_model(path, self.threads), self.images)

    def metrics(self, path: str, int8: Optional[Embedded] = None) -> Dict[str, object]:
        """Retrieval metrics and agreement with FP32 (what per-layer sensitivity ranks by), named by their test set
        (``dataset``); ``int8``: the file's embeddings of the first test set when already computed."""
        int8 = int8 or self.evaluate(path)
        return {"dataset": int8.result.dataset, **numbers(int8.result.metrics),
                **quantization_parity(self.fp32, int8, self.metric), **self.fixed}

    def runtime_parity(self, path: str) -> Dict[str, float]:
        """The runtime here against the file's Q/DQ semantics on the first query images ({} when it does not run
        here): their cosine, and ``runtime_fp32_gap``, how much further from FP32 the runtime's embeddings are than
        the Q/DQ semantics' (mean cosine to the FP32 embeddings of the same images; negative: closer)."""
        runtime = self.target.runtime_model(path, self.threads)
        if runtime is None:
            return {}
        reference = self.target.reference_model(path)
        images = self.images.q_images[:RUNTIME_PARITY_IMAGES]
        models = (reference, runtime)
        plain = [embed_images(m, images) for m in models]
        parity = parity_of(*plain)
        # the FP32 features were embedded as the evaluator embeds (TEST.FLIP), so the gap compares like with like;
        # the flipped pass is added to the plain one (the node-by-node reference is slow: each image runs once more)
        judged = plain
        if self.evaluator.flip:
            mirrored = torch.flip(images, dims=[3])
            judged = [(p + embed_images(m, mirrored)) / 2 for p, m in zip(plain, models)]
        fp32 = self.fp32.q_feats[:len(images)]
        to_fp32 = [F.cosine_similarity(e, fp32, dim=1).mean() for e in judged]
        return {"runtime_cosine_mean": parity.cosine_mean, "runtime_cosine_min": parity.cosine_min,
                "runtime_fp32_gap": float(to_fp32[0] - to_fp32[1]), "runtime_parity_images": parity.images,
                **self.target.runtime_metrics(runtime, path)}

    def graph_references(self) -> List[str]:
        """The references offered now (QAT adds fake_quant after this judge is made) that the judged runtime cannot be
        compared with directly: it runs here and re-fuses the graph (``GRAPH_REFERENCES``)."""
        if self.target.executes_graph or self.measured is None:
            return []
        return [name for name in GRAPH_REFERENCES if name in self.references]

    def qdq_semantics(self, path: str) -> Dict[str, object]:
        """The file's own Q/DQ semantics (``reference_model``, every node as written) evaluated on the first test
        set, where rules naming a graph reference need them; {} otherwise."""
        if not self.graph_references():
            return {}
        result = evaluate_cached(self.evaluator, self.target.reference_model(path), self.images).result
        return {QDQ_SEMANTICS: {"dataset": result.dataset, **numbers(result.metrics)}}

    def full_metrics(self, path: str, int8: Optional[Embedded] = None) -> Dict[str, object]:
        bounds = accumulation_bounds(path)
        return {**self.metrics(path, int8), **self.runtime_parity(path), **numbers(bounds),
                **self.target.file_metrics(path), **self.qdq_semantics(path)}

    def judged(self, payload: Mapping[str, object]) -> Judged:
        """The file's metrics (one payload, every test set) as the stage's Verdict judges them; rules naming a
        graph reference read the file's Q/DQ semantics where they were measured (``qdq_semantics``)."""
        semantics = payload.get(QDQ_SEMANTICS)
        measured = {name: Measurement(QDQ_SEMANTICS_LABEL, semantics) for name in self.graph_references()
                    if isinstance(semantics, Mapping)}
        return Judged(payload, self.references, self.rules, self.target.name, measured)

    def decide(self, metrics: Mapping[str, object]) -> List[GateDecision]:
        return self.verdict.decide([self.judged(metrics)])

    def fallback_can_help(self, metrics: Mapping[str, float]) -> bool:
        """Whether keeping layers in FP32 can fix what failed: the accuracy fallback answers the stage's own gates,
        not a file's structure (the accumulation bound, TensorRT's checks) or the built-in checks, and not a rule
        on the FP32 source (it is not the model handed over). A runtime-parity rule failing beside a stage gate
        does not stop it: a layer kept in FP32 leaves the runtime's integer kernels, so the fallback may fix both
        (measured: MobileNetV3-small in ONNX Runtime on an AMX Xeon, mAP -1.29 and parity min 0.925 all-INT8)."""
        own = {rule.text for rule in self.verdict.gates.rules}
        failed = [d for d in self.decide(metrics) if not d.passed]
        stage = [d for d in failed if d.rule in own]
        parity = [d for d in failed if d.rule not in own and d.metric in RUNTIME_PARITY_METRICS]
        return bool(stage) and len(stage) + len(parity) == len(failed) and all(d.metric not in self.fixed
                                                                                for d in stage)

    def passes(self, metrics: Mapping[str, object]) -> bool:
        return all(d.passed for d in self.decide(metrics))

    def __call__(self, path: str) -> Tuple[Dict[str, float], bool]:
        metrics = self.full_metrics(path)
        return metrics, self.passes(metrics)
