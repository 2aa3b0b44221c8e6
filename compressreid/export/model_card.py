"""model_card.json: what a user of the shipped ONNX file needs to feed it and to trust it, checked against the graph."""

from __future__ import annotations

import json
import os
import platform
from typing import Dict, List, Optional, Sequence

import onnx
import onnxruntime
import torch

import compressreid
from compressreid.engine.io import atomic_write_json
from compressreid.errors import ExportError
from compressreid.export.conventions import DEFAULT_CONVENTION, InputConvention, get_convention
from compressreid.export.cpu import this_machine
from compressreid.export.onnx_export import INPUT_NAME, OUTPUT_NAME
from compressreid.export.ort_model import check_embedding_graph, load_graph


def graph_embedding_dim(path: str) -> int:
    dims = load_graph(path).output[0].type.tensor_type.shape.dim
    return dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value") else -1


def input_contract(input_size: Sequence[int], embedding_dim: int,
                   convention: Optional[InputConvention] = None) -> Dict[str, object]:
    """How to call the graph: names, shape, and the input convention it was exported and judged with."""
    convention = convention or get_convention(DEFAULT_CONVENTION)
    return {
        "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "input_shape": ["batch", 3, int(input_size[0]), int(input_size[1])], "layout": "NCHW",
        "dtype": "float32", **convention.card(),
        "embedding_dim": int(embedding_dim), "l2_normalized": False,
        "distance": "cosine (L2-normalise the embeddings, then compare by dot product)",
    }


def versions() -> Dict[str, str]:
    return {"compressreid": compressreid.__version__, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "python": platform.python_version()}


def build_model_card(onnx_path: str, input_size: Sequence[int], metrics: Dict[str, object],
                     gates: Sequence[Dict[str, object]], accepted: bool, latency: Dict[str, object],
                     method: Dict[str, object], source: str, convention: Optional[InputConvention] = None,
                     target: Optional[Dict[str, object]] = None,
                     targets: Sequence[Dict[str, object]] = ()) -> Dict[str, object]:
    """The card of one shipped file (its target's fields under ``target``); ``targets``: the run's other files'
    entries (``target_entry``), so one card describes every file the run wrote."""
    return {
        **target_entry(onnx_path, input_size, metrics, gates, accepted, latency, convention, target),
        "source": source, "quantization": method, "versions": versions(), "build_machine": this_machine(),
        "targets": list(targets),
    }


def target_entry(onnx_path: str, input_size: Sequence[int], metrics: Dict[str, object],
                 gates: Sequence[Dict[str, object]], accepted: bool, latency: Dict[str, object],
                 convention: Optional[InputConvention] = None,
                 target: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """What a user of one file needs: its name, contract, size, metrics, gate decisions, latency, target."""
    return {
        "model": os.path.basename(onnx_path), "accepted": accepted,
        **input_contract(input_size, graph_embedding_dim(onnx_path), convention),
        "size_bytes": os.path.getsize(onnx_path),
        "metrics": metrics, "gates": list(gates), "latency_ms": latency,
        **({"target": target} if target is not None else {}),
    }


def write_model_card(path: str, card: Dict[str, object]) -> str:
    return atomic_write_json(path, card)


def card_entry(card: Dict[str, object], onnx_path: str) -> Optional[Dict[str, object]]:
    """The entry of ``card`` (a model card as read) that names ``onnx_path``'s file: its top level, one of its
    ``targets``, or the quantize run's FP32 source (``fp32_source``); None when none does."""
    entries: List[Dict[str, object]] = [card, *card.get("targets", []),
                                        *([card["fp32_source"]] if "fp32_source" in card else [])]
    return next((e for e in entries if e.get("model") == os.path.basename(onnx_path)), None)


def check_model_card(card_path: str, onnx_path: str) -> Dict[str, object]:
    """Read a model card and check it describes ``onnx_path`` (its own entry when the card lists several files, the
    quantize run's FP32 source under ``fp32_source`` included): input name and size, embedding dimension; returns
    that entry.

    Raises:
        ExportError: unreadable card, or a card that disagrees with the graph.
    """
    try:
        with open(card_path, "r", encoding="utf-8") as handle:
            card = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"model card {card_path} is not readable JSON: {exc}") from None
    card = card_entry(card, onnx_path) or card
    shape = check_embedding_graph(onnx_path)
    graph = load_graph(onnx_path)
    problems = []
    if card.get("input_name") != graph.input[0].name:
        problems.append(f"input_name {card.get('input_name')!r} vs graph {graph.input[0].name!r}")
    card_shape = card.get("input_shape", [None] * 4)
    for axis, name in ((2, "height"), (3, "width")):
        if shape[axis] > 0 and card_shape[axis] != shape[axis]:
            problems.append(f"input {name} {card_shape[axis]} vs graph {shape[axis]}")
    dim = graph_embedding_dim(onnx_path)
    if dim > 0 and card.get("embedding_dim") != dim:
        problems.append(f"embedding_dim {card.get('embedding_dim')} vs graph {dim}")
    if problems:
        raise ExportError(f"model card {card_path} disagrees with {onnx_path}: {'; '.join(problems)}")
    return card


def read_card_if_present(onnx_path: str) -> Optional[Dict[str, object]]:
    """The model_card.json next to ``onnx_path``, checked against the graph; None when there is none."""
    card = os.path.join(os.path.dirname(os.path.abspath(onnx_path)), "model_card.json")
    return check_model_card(card, onnx_path) if os.path.isfile(card) else None
