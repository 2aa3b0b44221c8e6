"""Shared helpers of the benchmarks (runtime_speed.py, peer_nncf.py, ptq_rounding.py, int8_error_split.py): a
quantize run's FP32 model as the run judges it, models with random weights and warmed BN statistics, our INT8 and
NNCF's INT8 of one FP32 ONNX file, a runner per runtime, interleaved timing, and per-query AP with paired
differences."""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, List, Sequence, Tuple

import numpy as np
import onnx
import torch
from torch import nn

from compressreid.config import load_config
from compressreid.data.build import load_test_sets
from compressreid.evaluation.distance import compute_distance
from compressreid.evaluation.evaluator import ReIDEvaluator, encode_identities
from compressreid.evaluation.rank import evaluate_rank_detailed
from compressreid.export.onnx_export import example_images
from compressreid.export.ort_model import OrtEmbedder
from compressreid.modeling import build_model
from compressreid.quant.compare import Embedded, TestImages, evaluate_cached, load_test_images
from compressreid.quant.format import QuantFormat
from compressreid.quant.ptq import WEIGHTED_OPS, preprocess, quantize_ptq
from compressreid.quant.refine import NEAREST, Refinement
from compressreid.quant.targets import QuantTarget, build_targets

from _pair_timing import paired_ratios

# openvino: one compiled model with a dynamic batch (compile_openvino(path, threads));
# openvino-static: the same file compiled once per batch size with static shapes, as the openvino target runs it.
RUNTIMES = ("onnxruntime", "openvino", "openvino-static")
# On request only: openvino-static with OpenVINO's default precision for the float parts instead of f32 (bf16 on
# CPUs with AMX: what a user gets who compiles the FP32 file without a hint).
OPT_IN_RUNTIMES = ("openvino-static-default",)
Runner = Callable[[np.ndarray], np.ndarray]


# ---- a quantize run's FP32 model, judged as the run judges ------------------------------------------------------
@dataclass
class QuantRun:
    """What the PTQ benchmarks read from a tools/quantize.py run folder: its config with one target, that target,
    the first test set's images and evaluator, the FP32 file and its evaluation in ONNX Runtime."""

    cfg: object
    target: QuantTarget
    images: TestImages
    evaluator: ReIDEvaluator
    fp32_path: str
    fp32: Embedded

    @property
    def fp32_map(self) -> float:
        return float(self.fp32.result.metrics["mAP"])


def load_quant_run(run: str, target_name: str, threads: int) -> QuantRun:
    cfg = load_config(os.path.join(run, "config.yaml"), ["QUANT.TARGETS", repr((target_name,))])
    images = load_test_images(cfg, load_test_sets(cfg)[0])
    evaluator = ReIDEvaluator.from_config(cfg)
    fp32_path = os.path.join(run, "student_fp32.onnx")
    fp32 = evaluate_cached(evaluator, OrtEmbedder(fp32_path, threads=threads), images)
    return QuantRun(cfg, build_targets(cfg)[0], images, evaluator, fp32_path, fp32)


# ---- models ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def warm_bn_statistics(model: nn.Module, size: Sequence[int], images: int = 64, batch: int = 16) -> nn.Module:
    """Replace every BatchNorm's running statistics by their average over random images, then eval mode.

    Why: with random weights and default statistics (mean 0, variance 1) activations grow block by block, so
    calibration ranges, zero points and which tensors are signed look nothing like a trained model's.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the warm-up batches
    model.train()
    for seed in range(max(1, images // batch)):
        model(example_images(size, batch, seed=1000 + seed))
    return model.eval()


def build_random_model(config: str, size: Sequence[int], opts: Sequence[str] = (), warm: bool = True) -> nn.Module:
    """The config's model at ``size`` with random weights (seeded), BN statistics warmed unless ``warm`` is False."""
    torch.manual_seed(0)
    cfg = load_config(config, ["INPUT.SIZE_TEST", repr(list(size)), *opts])
    model = build_model(cfg).eval()
    return warm_bn_statistics(model, size) if warm else model


# ---- INT8 files --------------------------------------------------------------------------------------------------
def quantize_ours(fp32_path: str, out_path: str, batches: Sequence[torch.Tensor], fmt: QuantFormat,
                  method: str = "minmax", refinement: Refinement = NEAREST) -> str:
    """Our PTQ as tools/quantize.py runs it for one target format (pre-processing + quantize_ptq, no fallback).
    Timing benchmarks keep nearest rounding (the rounding does not change the graph a runtime executes)."""
    with tempfile.TemporaryDirectory(prefix="bench-ptq-") as tmp:
        prepared = preprocess(fp32_path, os.path.join(tmp, "prepared.onnx"))
        return quantize_ptq(prepared, out_path, list(batches), method, fmt, refinement=refinement)


def single_images(batches: Sequence[torch.Tensor]) -> List[np.ndarray]:
    """Calibration batches as one-image float32 arrays (NNCF's advice: batch 1 for statistics)."""
    return [image[None].numpy().astype(np.float32) for batch in batches for image in batch]


def nncf_dataset(model: onnx.ModelProto, images: Sequence[np.ndarray]):
    import nncf

    name = model.graph.input[0].name
    return nncf.Dataset(list(images), lambda item: {name: item})


def quantize_nncf(fp32_path: str, out_path: str, images: Sequence[np.ndarray], **kwargs) -> str:
    """``nncf.quantize`` of an FP32 ONNX file with its defaults (INT8, PERFORMANCE preset, OverflowFix.FIRST_LAYER,
    fast bias correction) on ``images``; ``kwargs`` go to nncf.quantize."""
    import nncf

    model = onnx.load(fp32_path)
    quantized = nncf.quantize(model, nncf_dataset(model, images), subset_size=len(images), **kwargs)
    onnx.save(quantized, out_path)
    return out_path


def nncf_available() -> bool:
    try:
        import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def fp32_layers(path: str) -> List[str]:
    """Convolutions and matrix products whose weights are float (not read through a DequantizeLinear)."""
    graph = onnx.load(path, load_external_data=False).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [node.name for node in graph.node
            if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] not in dequantized]


# ---- per-query accuracy ------------------------------------------------------------------------------------------
def per_query_ap(q_feats: torch.Tensor, g_feats: torch.Tensor, images, metric: str) -> np.ndarray:
    """AP (in %) of every query of ``images`` (a compressreid.quant.compare.TestImages), ranked densely by
    ``metric``; NaN for a query without a true match. Its NaN-mean is the evaluator's mAP without AQE/re-ranking."""
    q_ids, g_ids = encode_identities([r.pid for r in images.q_records], [r.pid for r in images.g_records])
    q_cams = np.array([r.camid for r in images.q_records])
    g_cams = np.array([r.camid for r in images.g_records])
    ap = np.full(len(q_ids), np.nan)
    if not (torch.isfinite(q_feats).all() and torch.isfinite(g_feats).all()):
        return ap  # a broken model: no query scored (the evaluator reports NaN metrics for it too)
    ranks = evaluate_rank_detailed(np.asarray(compute_distance(q_feats, g_feats, metric)), q_ids, g_ids, q_cams,
                                   g_cams)
    ap[ranks.valid_query_mask] = ranks.all_AP * 100.0
    return ap


# ---- runners -------------------------------------------------------------------------------------------------------
class StaticBatchOpenVino:
    """An ONNX embedding model in OpenVINO's CPU plugin compiled once per batch size it is fed, with static shapes,
    as compressreid.export.openvino_model.compile_openvino builds it for the openvino target (``openvino-static``
    rows; ``openvino`` rows compile one model with a dynamic batch, for comparison)."""

    def __init__(self, path: str, threads: int = 0, precision: str = "f32"):
        self.path, self.threads, self.precision, self.requests = path, threads, precision, {}

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] not in self.requests:
            from compressreid.export.openvino_model import compile_openvino

            compiled = compile_openvino(self.path, self.threads, x.shape[0], self.precision)
            self.requests[x.shape[0]] = compiled.create_infer_request()
        request = self.requests[x.shape[0]]
        request.infer({0: x})
        return request.get_output_tensor(0).data


class RunnerModule(nn.Module):
    """A Runner as a torch module (images -> embeddings), so the evaluator can score any RUNTIMES entry."""

    def __init__(self, run: Runner):
        super().__init__()
        self.run = run

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(np.array(self.run(array), copy=True))


def make_runner(path: str, runtime: str, threads: int) -> Runner:
    """``images -> embeddings`` for ``path`` in one of RUNTIMES (ORT and dynamic-batch OpenVINO as our targets
    build them)."""
    if runtime == "onnxruntime":
        from compressreid.export.ort_model import ort_session

        session = ort_session(path, threads)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if runtime == "openvino":
        from compressreid.export.openvino_model import compile_openvino

        request = compile_openvino(path, threads).create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            request.infer({0: x})
            return request.get_output_tensor(0).data
        return run
    if runtime == "openvino-static":
        return StaticBatchOpenVino(path, threads).run
    if runtime == "openvino-static-default":
        return StaticBatchOpenVino(path, threads, precision="").run
    raise ValueError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES + OPT_IN_RUNTIMES}")


# ---- interleaved timing ------------------------------------------------------------------------------------------
def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def interleaved(cells: Dict[Hashable, Tuple[Runner, np.ndarray, int]], rounds: int, warmup: int = 2,
                gap_s: float = 0.05) -> Dict[Hashable, Dict[str, List[List[float]]]]:
    """Time every cell (runner, input, calls per round) round-robin: each round runs every cell's calls, starting at
    a different cell each round, so machine drift and neighbours' load fall on all cells alike.

    ``gap_s``: an untimed pause between cells, so one runtime's spinning worker threads are idle before the next
    runtime's call. Returns per cell ``wall`` and ``cpu`` milliseconds per call (process CPU time, all threads),
    one list per round.
    """
    names = list(cells)
    for name in names:
        run, x, _ = cells[name]
        for _ in range(warmup):
            run(x)
    out = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            run, x, calls = cells[name]
            time.sleep(gap_s)
            wall, cpu = [], []
            for _ in range(calls):
                c0, t0 = _cpu_seconds(), time.perf_counter()
                run(x)
                wall.append((time.perf_counter() - t0) * 1e3)
                cpu.append((_cpu_seconds() - c0) * 1e3)
            out[name]["wall"].append(wall)
            out[name]["cpu"].append(cpu)
    return out


def summarize(samples: Dict[str, List[List[float]]], batch: int) -> Dict[str, float]:
    """Median / min / mean wall ms per call over every call of every round, median CPU ms, images per second."""
    wall = [v for row in samples["wall"] for v in row]
    cpu = [v for row in samples["cpu"] for v in row]
    p50 = statistics.median(wall)
    return {"batch": batch, "ms_p50": round(p50, 3), "ms_min": round(min(wall), 3),
            "ms_mean": round(statistics.fmean(wall), 3), "cpu_ms_p50": round(statistics.median(cpu), 3),
            "images_per_second": round(batch * 1e3 / p50, 1), "calls": len(wall)}


def paired_ratio(a: Dict[str, List[List[float]]], b: Dict[str, List[List[float]]], key: str = "wall") -> float:
    """Median over rounds of (round median of a) / (round median of b): > 1 means a is slower."""
    return statistics.median(paired_ratios(a, b, key))
