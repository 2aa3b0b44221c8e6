"""FP32 (and fake-quant) ONNX export through torch's maintained torch.export-based exporter.

The graph takes ``images`` (float32 [B, 3, H, W], RGB in 0..255, dynamic B) and returns ``embedding`` [B, D];
normalisation is inside the model, so the file is self-contained.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Callable, Dict, Optional, Sequence

import onnx
import torch
from torch import nn

from compressreid.engine.io import publish_file, temp_file_beside
from compressreid.errors import ExportError

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
MIN_OPSET = 17


def example_images(input_size: Sequence[int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Deterministic RGB 0..255 images of ``input_size`` (H, W)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, int(input_size[0]), int(input_size[1]), generator=generator) * 255.0


def _default_opset(path: str) -> int:
    return next(o.version for o in onnx.load(path, load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))


def _strip_node_metadata(program) -> None:
    """Drop the exporter's per-node debug metadata (Python stack traces with this machine's source paths, FX node
    text, module scopes) before saving: it is 75 % of a QAT OSNet file (3.5 of 4.6 MB) and leaks local paths into
    shipped models. Node names, which quantization and fallback refer to, are kept."""
    graphs = [program.model.graph, *program.model.functions.values()]
    for graph in graphs:
        for node in graph.all_nodes():
            node.metadata_props.clear()


def export_onnx(model: nn.Module, path: str, input_size: Sequence[int], opset: int = 18,
                custom_translations: Optional[Dict[Callable, Callable]] = None) -> str:
    """Export ``model`` in eval mode to ``path`` (written atomically) and check it with the ONNX checker.

    The torch.export-based exporter (``dynamo=True``) is used: the TorchScript exporter is deprecated in
    torch 2.14. Its native opset is 18; lower opsets go through ONNX's version converter.

    Args:
        custom_translations: extra aten-op -> onnxscript translations (QAT uses them to emit QDQ).

    Raises:
        ExportError: opset below 17, or an operator the exporter cannot translate.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"ONNX opset {opset} is too old: expected >= {MIN_OPSET}")
    was_training = model.training
    model.eval()
    images = example_images(input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", category=UserWarning)  # exporter chatter, e.g. InstanceNorm in eval
            warnings.filterwarnings("ignore", category=FutureWarning)
            program = torch.onnx.export(model, (images,), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=({0: batch},), custom_translation_table=custom_translations,
                                        verbose=False, report=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {first}") from exc
    finally:
        model.train(was_training)
    tmp = temp_file_beside(path, prefix=".export-", suffix=".onnx")
    try:
        _strip_node_metadata(program)
        program.save(tmp)
        onnx.checker.check_model(tmp, full_check=True)
        written = _default_opset(tmp)
        if written != opset:  # the exporter keeps its own opset when down-conversion fails (e.g. ReduceMean)
            raise ExportError(f"ONNX export wrote opset {written} where {opset} was asked for; torch's exporter "
                              "writes opset 18 natively, use QUANT.OPSET 18")
        publish_file(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info("exported %s to %s (opset %d)", type(model).__name__, path, opset)
    return path
