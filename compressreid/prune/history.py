"""The pruning history: every layer a pruning step changed, by module name, so a fresh model replays it exactly.

The history is plain data (str/int/list/dict), stored in the checkpoint under ``pruning_history`` and read with
``weights_only=True``: a pruned model is rebuilt from the registry and this record, never unpickled. Each entry
is ``[module name, "prune_out_channels" | "prune_in_channels", [channel indices]]``, in the order they were
applied; replay calls the same layer pruners, so it needs no graph tracing.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import torch
from torch import nn
from torch_pruning import ops
from torch_pruning.pruner.function import BasePruningFunc, PrunerBox

from compressreid.errors import CheckpointError
from compressreid.prune.ibn import customized_pruners

HISTORY_FORMAT = "compressreid.pruning_history/1"
PRUNING_FUNCTIONS = ("prune_out_channels", "prune_in_channels")

Record = List[object]  # [module name, pruning function name, [indices]]


def new_history(input_size: Sequence[int]) -> Dict[str, object]:
    """An empty history; ``input_size`` (H, W) is what replay feeds the model to re-derive feature taps."""
    return {"format": HISTORY_FORMAT, "input_size": [int(s) for s in input_size], "steps": []}


def pruner_of(module: nn.Module) -> BasePruningFunc:
    """The layer pruner Torch-Pruning's graph uses for ``module`` (compressreid's own for IBN).

    Raises:
        CheckpointError: no pruner handles this module type.
    """
    for cls, pruner in customized_pruners().items():
        if isinstance(module, cls):
            return pruner
    pruner = PrunerBox.get(ops.module2type(module))
    if pruner is None:
        raise CheckpointError(f"pruning history: no layer pruner for a {type(module).__name__}")
    return pruner


def group_records(group, names: Dict[nn.Module, str]) -> List[Record]:
    """What pruning ``group`` will change, as records: its real layers only (Torch-Pruning's pseudo-modules for
    additions, outputs and reshapes hold no weights and exist only inside the graph).

    Raises:
        CheckpointError: the group prunes a bare nn.Parameter (not replayable by module name).
    """
    records = []
    for dep, idxs in group:
        if dep.target.type == ops.OPTYPE.PARAMETER:
            raise CheckpointError("pruning a bare nn.Parameter is not supported (it has no module to replay on)")
        module = dep.target.module
        if module not in names or not len(idxs):
            continue
        plain = sorted(int(getattr(i, "idx", i)) for i in idxs)
        records.append([names[module], dep.handler.__name__, plain])
    return records


def apply_records(model: nn.Module, records: Sequence[Record]) -> None:
    """Apply records in order with the same layer pruners that produced them.

    Raises:
        CheckpointError: a malformed record, an unknown module or function, or indices out of range.
    """
    for record in records:
        if not (isinstance(record, (list, tuple)) and len(record) == 3):
            raise CheckpointError(f"pruning history: malformed record {record!r}")
        name, function, idxs = record
        if function not in PRUNING_FUNCTIONS:
            raise CheckpointError(f"pruning history: unknown pruning function '{function}' for {name}")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise CheckpointError(f"pruning history names module '{name}', which this model does not have") from None
        pruner = pruner_of(module)
        to_output = function == "prune_out_channels"
        try:
            pruner(module, list(idxs), to_output=to_output)  # checks the indices against the layer's channels
        except AssertionError as exc:
            raise CheckpointError(f"pruning history does not fit module '{name}': {exc}") from None


def apply_pruning_history(model: nn.Module, history: Dict[str, object]) -> nn.Module:
    """Replay ``history`` on a freshly built model (in place) and re-derive its feature taps.

    Raises:
        CheckpointError: not a compressreid pruning history, or one that does not fit this model.
    """
    if not isinstance(history, dict) or history.get("format") != HISTORY_FORMAT:
        found = history.get("format") if isinstance(history, dict) else type(history).__name__
        raise CheckpointError(f"pruning history: expected format '{HISTORY_FORMAT}', found {found!r}")
    for step in history["steps"]:
        apply_records(model, step)
    refresh_feature_info(model, history["input_size"])
    return model


@torch.no_grad()
def refresh_feature_info(model: nn.Module, input_size: Sequence[int]) -> None:
    """Set the channels of every declared feature tap (the model's and its submodules' ``feature_info``) to
    what the tapped modules output now; consumers (distillation taps, adapters) read this metadata."""
    owners = [(prefix, m) for prefix, m in model.named_modules() if isinstance(getattr(m, "feature_info", None), list)]
    paths = {f"{prefix}.{tap.module}" if prefix else tap.module for prefix, m in owners for tap in m.feature_info}
    seen: Dict[str, int] = {}
    handles = [model.get_submodule(path).register_forward_hook(
        lambda _m, _i, out, path=path: seen.__setitem__(path, int(out.shape[1]))) for path in sorted(paths)]
    was_training = model.training
    parameter = next(model.parameters())
    try:
        model.eval()  # eval: a probe forward must not move BatchNorm statistics
        model(torch.zeros(1, 3, *input_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    for prefix, owner in owners:
        owner.feature_info = [dataclasses.replace(tap, channels=seen[f"{prefix}.{tap.module}" if prefix else tap.module])
                              for tap in owner.feature_info]
