"""Torch-Pruning support for IBN-a: one pruner that splits a channel index set between its IN and BN halves.

Torch-Pruning traces IBN's split/concat as functional ops and never reaches the BatchNorm half, so IBN is
registered with this pruner (which keeps ``half``, the InstanceNorm width, in step) and traced as one opaque
node (``trace_ibn_as_leaf``).
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Sequence, Tuple

import torch
from torch import nn
from torch_pruning.pruner.function import BasePruningFunc, BatchnormPruner, InstanceNormPruner

from compressreid.modeling.layers.norm import IBN


def split_ibn_indices(layer: IBN, idxs: Sequence[int]) -> Tuple[list, list]:
    """Channel indices of an IBN output as (InstanceNorm indices, BatchNorm indices), each in its own range."""
    return [i for i in idxs if i < layer.half], [i - layer.half for i in idxs if i >= layer.half]


class IBNPruner(BasePruningFunc):
    """Prunes an IBN's channels: indices below ``half`` go to the InstanceNorm, the rest to the BatchNorm.

    A norm couples its input and output channels, so in and out pruning are the same operation.
    """

    TARGET_MODULES = IBN

    def __init__(self):
        super().__init__()
        self._in_norm, self._batch_norm = InstanceNormPruner(), BatchnormPruner()

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        in_idxs, bn_idxs = split_ibn_indices(layer, idxs)
        if in_idxs:
            self._in_norm.prune_out_channels(layer.IN, in_idxs)
        if bn_idxs:
            self._batch_norm.prune_out_channels(layer.BN, bn_idxs)
        layer.half = layer.IN.num_features
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.IN.num_features + layer.BN.num_features

    get_in_channels = get_out_channels


def customized_pruners() -> Dict[type, BasePruningFunc]:
    """The module types compressreid prunes with its own pruners (pass to Torch-Pruning's dependency graph)."""
    return {IBN: IBNPruner()}


class _Opaque(torch.autograd.Function):
    """``output`` as a single autograd node whose only input is ``inputs``: what a tracer sees of a leaf layer."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return output.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # pragma: no cover - graph tracing never runs backward
        return None, None


@contextlib.contextmanager
def trace_ibn_as_leaf(model: nn.Module) -> Iterator[None]:
    """While active, every IBN's output hangs directly off its input in the autograd graph.

    Torch-Pruning builds its dependency graph by walking ``grad_fn`` links backwards from the output; through
    IBN's split/cat it would reach the InstanceNorm half only and couple the wrong channels. With its internals
    hidden behind one node, IBN is a leaf handled by ``IBNPruner``. Values are unchanged; hooks are removed on
    exit (the hook must be registered before the tracer's own, so the tracer records the opaque node).
    """
    handles = [m.register_forward_hook(lambda _m, inputs, output: _Opaque.apply(inputs[0], output.detach()))
               for m in model.modules() if isinstance(m, IBN)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
