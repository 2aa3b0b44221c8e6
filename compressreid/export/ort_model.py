"""Run an ONNX embedding model in ONNX Runtime behind the nn.Module interface the evaluator uses."""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from compressreid.errors import ExportError


def ort_session(path: str, threads: int = 0, optimized: bool = True,
                config: Optional[Dict[str, str]] = None) -> ort.InferenceSession:
    """A CPU session with all graph optimisations (QDQ pairs become INT8 kernels); ``threads`` 0 = ORT default.

    ``optimized=False`` runs every node as written (each QuantizeLinear / DequantizeLinear on its own): the graph's
    ONNX semantics, the reference that ONNX Runtime's fused integer kernels are compared with. ``config``: session
    config entries (``SessionOptions.add_session_config_entry``).

    Raises:
        ExportError: the file is not a model ONNX Runtime can load (e.g. an unsupported operator).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"ONNX Runtime cannot load {path}: {first}") from None


def load_graph(path: str) -> onnx.GraphProto:
    """The graph of an ONNX file (weights not loaded).

    Raises:
        ExportError: a missing file or one that is not an ONNX model.
    """
    try:
        return onnx.load(path, load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, the OS raises OSError
        raise ExportError(f"{path} is not a readable ONNX model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def check_embedding_graph(path: str) -> List[int]:
    """The graph's input shape [B, 3, H, W] (B symbolic, as -1), checking it is an images -> embedding model.

    Raises:
        ExportError: not one float input of rank 4 with 3 channels and one rank-2 output.
    """
    graph = load_graph(path)
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExportError(f"{path}: expected one input and one output, found {len(inputs)} and {len(graph.output)}")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ExportError(f"{path}: input '{inputs[0].name}' is {dims}, expected float32 [B, 3, H, W] images")
    if len(graph.output[0].type.tensor_type.shape.dim) != 2:
        raise ExportError(f"{path}: output '{graph.output[0].name}' is not a [B, D] embedding")
    return dims


class OrtEmbedder(nn.Module):
    """An ONNX embedding model as a module: float32 [B, 3, H, W] RGB 0..255 in, [B, D] float32 out.

    It has no parameters; the evaluator's ``.to(device)`` and ``.eval()`` are no-ops for it (CPU only).
    """

    def __init__(self, path: str, threads: int = 0, optimized: bool = True, config: Optional[Dict[str, str]] = None):
        super().__init__()
        self.path = path
        self.input_shape = check_embedding_graph(path)
        self.session = ort_session(path, threads, optimized, config)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = self.input_shape[2:]
        if (h > 0 and images.shape[2] != h) or (w > 0 and images.shape[3] != w):
            raise ExportError(f"{self.path} takes {h}x{w} images, got {tuple(images.shape[2:])}")
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(np.asarray(self.session.run(None, {self.input_name: array})[0]))
