"""Run an ONNX embedding model in OpenVINO's CPU plugin behind the nn.Module interface the evaluator uses.

OpenVINO is an optional runtime (``pip install 'compressreid[openvino]'``): it is imported when a model is
built, never at module import.
"""

from __future__ import annotations

from typing import Dict, Set

import numpy as np
import torch
from torch import nn

from compressreid.errors import ConfigError, ExportError
from compressreid.export.ort_model import check_embedding_graph

INSTALL_HINT = "pip install 'compressreid[openvino]' (the openvino package)"


def require_openvino():
    """The openvino module.

    Raises:
        ConfigError: openvino is not installed (names what to install).
    """
    try:
        import openvino
    except ImportError:
        raise ConfigError(f"the openvino runtime is not installed: {INSTALL_HINT}") from None
    return openvino


def compile_openvino(path: str, threads: int = 0, batch: int = 0, precision: str = "f32"):
    """An OpenVINO CPU compiled model of an ONNX file, ``precision`` for its float parts (f32: no bf16
    down-conversion on CPUs that have it, as every target judges; "" leaves OpenVINO's default, bf16 on AMX CPUs),
    latency hint, ``threads`` intra-op threads (0 = OpenVINO's default), for a static ``batch`` (0 = any batch).

    Why static: with a dynamic batch OpenVINO runs the element-wise nodes around quantized IBN blocks one by one;
    with static shapes it fuses them into JIT subgraph kernels (measured, R50-IBN 1/4, one thread: 0.88x the
    CPU time at batch 32, 0.72x at batch 1; 0.98x at full width).

    Raises:
        ExportError: a file OpenVINO cannot read or compile.
    """
    ov = require_openvino()
    config: Dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        core = ov.Core()
        model = core.read_model(path)
        shape = model.input(0).get_partial_shape()
        shape[0] = ov.Dimension(batch) if batch else ov.Dimension()
        model.reshape({model.input(0).get_any_name(): shape})
        return core.compile_model(model, "CPU", config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses with long texts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"OpenVINO cannot compile {path}: {first}") from None


# What OpenVINO's runtime model calls the weighted layers (layerType in each op's rt_info).
WEIGHTED_LAYER_TYPES = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")
# OpenVINO splits a convolution's bias off into an Add that keeps the layer's name and renames the convolution
# "<name>/WithoutBiases"; the Add may then fuse into a float element-wise subgraph (OSNet's did).
_DECOMPOSED = "/WithoutBiases"


def _integer_ops(compiled):
    """(op, its rt_info as strings) of every node a compiled model's runtime model executes in 8-bit integers
    (runtimePrecision u8/i8)."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = {key: value.astype(str) for key, value in op.get_rt_info().items()}
        if info.get("runtimePrecision") in ("u8", "i8"):
            yield op, info


def int8_layer_names(compiled) -> Set[str]:
    """The source-graph names of every layer a compiled model's weighted kernels execute in 8-bit integers
    (``originalLayersNames`` lists what each kernel fused): a quantized file whose layers OpenVINO runs in float
    keeps neither its speed nor its Q/DQ semantics."""
    names: Set[str] = set()
    for op, info in _integer_ops(compiled):
        if info.get("layerType", "") in WEIGHTED_LAYER_TYPES:
            fused = info["originalLayersNames"].split(",") if "originalLayersNames" in info else []
            names.update(n[:-len(_DECOMPOSED)] if n.endswith(_DECOMPOSED) else n
                         for n in (op.get_friendly_name(), *fused))
    return names


def int8_kernel_names(compiled) -> Set[str]:
    """The kernel implementations (primitiveType, e.g. ``brgconv_avx512_I8``, ``jit_avx2_I8``) a compiled model runs
    its 8-bit integer nodes with: which instruction set its integer arithmetic took."""
    return {info.get("primitiveType", "?") for _, info in _integer_ops(compiled)}


class OpenVinoEmbedder(nn.Module):
    """An ONNX embedding model run by OpenVINO on the CPU: float32 [B, 3, H, W] in, [B, D] float32 out.

    One compiled model per batch size, with static shapes, made on first use (batch 1 at construction, so a file
    OpenVINO cannot compile fails at once); that is how an integrator should compile it too.
    """

    def __init__(self, path: str, threads: int = 0):
        super().__init__()
        self.path, self.threads = path, threads
        self.input_shape = check_embedding_graph(path)
        self.compiled: Dict[int, object] = {}
        self.requests: Dict[int, object] = {}
        self._request(1)

    def _request(self, batch: int):
        if batch not in self.requests:
            self.compiled[batch] = compile_openvino(self.path, self.threads, batch)
            self.requests[batch] = self.compiled[batch].create_infer_request()
        return self.requests[batch]

    def int8_layers(self) -> Set[str]:
        """Names of the source layers OpenVINO's weighted kernels run in 8-bit integers (as compiled for batch 1)."""
        return int8_layer_names(self.compiled[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = self.input_shape[2:]
        if (h > 0 and images.shape[2] != h) or (w > 0 and images.shape[3] != w):
            raise ExportError(f"{self.path} takes {h}x{w} images, got {tuple(images.shape[2:])}")
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        request = self._request(int(array.shape[0]))
        request.infer({0: array})
        return torch.from_numpy(np.array(request.get_output_tensor(0).data, copy=True))
