"""Latency and throughput of an ONNX model in ONNX Runtime, or of a PyTorch model, measured the same way."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from compressreid.export.onnx_export import example_images
from compressreid.export.ort_model import ort_session


def _time(run: Callable[[], object], iters: int, warmup: int) -> list:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def latency_summary(samples: Sequence[float], batch: int) -> Dict[str, float]:
    """Median, mean and minimum milliseconds per call and images per second of ``samples`` at ``batch``."""
    p50 = statistics.median(samples)
    return {"batch": batch, "ms_p50": round(p50, 3), "ms_mean": round(statistics.fmean(samples), 3),
            "ms_min": round(min(samples), 3), "images_per_second": round(batch * 1000.0 / p50, 1),
            "iters": len(samples)}


def measure_latency(onnx_path: str, input_size: Sequence[int], batch: int = 1, iters: int = 20,
                    threads: int = 0, warmup: int = 3) -> Dict[str, float]:
    """Median, mean and minimum milliseconds per call at ``batch`` in an ORT session of ``threads`` threads."""
    session = ort_session(onnx_path, threads)
    feed = {session.get_inputs()[0].name: example_images(input_size, batch).numpy().astype(np.float32)}
    return latency_summary(_time(lambda: session.run(None, feed), iters, warmup), batch)


@torch.inference_mode()
def measure_torch_latency(model: nn.Module, input_size: Sequence[int], batch: int = 1, iters: int = 20,
                          threads: int = 0, warmup: int = 3) -> Dict[str, float]:
    """The same measurement for a PyTorch model in eager mode (``threads`` 0 = torch's current setting)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = model.eval()
        images = example_images(input_size, batch)
        return latency_summary(_time(lambda: model(images), iters, warmup), batch)
    finally:
        torch.set_num_threads(previous)


@torch.inference_mode()
def measure_module_latency(model: nn.Module, input_size: Sequence[int], batch: int = 1, iters: int = 20,
                           transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                           warmup: int = 3) -> Dict[str, float]:
    """The same measurement for any embedding module (an ONNX Runtime or OpenVINO model behind nn.Module, so every
    runtime is timed the same way); ``transform`` puts the RGB 0..255 example images into the model's input
    convention (outside the timed call)."""
    images = example_images(input_size, batch)
    if transform is not None:
        images = transform(images)
    return latency_summary(_time(lambda: model(images), iters, warmup), batch)


@torch.inference_mode()
def interleaved_latency(models: Sequence[Callable[[torch.Tensor], object]], inputs: Sequence[torch.Tensor],
                        rounds: int, calls: int, warmup: int = 3) -> List[List[List[float]]]:
    """Time several models in turn: each of ``rounds`` rounds makes ``calls`` timed calls of every model on its
    input, so the drift of a shared machine hits them alike and their per-round ratios cancel it. The order rotates
    from round to round (the first model of one round goes last in the next), so whatever favours a position in the
    round (a warm cache, a frequency step) is shared too. Returns, per model, per round, the call times in
    milliseconds."""
    for model, images in zip(models, inputs):
        for _ in range(warmup):
            model(images)
    samples: List[List[List[float]]] = [[] for _ in models]
    for r in range(rounds):
        for i in ((r + k) % len(models) for k in range(len(models))):
            model, images = models[i], inputs[i]
            samples[i].append(_time(lambda: model(images), calls, 0))
    return samples
