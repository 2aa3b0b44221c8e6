"""A thin adapter over Torch-Pruning's dependency graph: coupled channel groups, their scores, and one pruning
step that reaches a MACs or parameter target with widths rounded to ``round_to``.

Only the backbone is pruned: any group that touches another module (the head: BNNeck, reduction, classifier)
is left whole, so the backbone's output channels, the embedding dimension and the classifier do not change.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch
import torch_pruning as tp
from torch import nn

from compressreid.errors import ConfigError
from compressreid.modeling.layers.norm import IBN
from compressreid.prune.history import Record, group_records
from compressreid.prune.ibn import customized_pruners, trace_ibn_as_leaf

logger = logging.getLogger(__name__)

TARGETS = ("macs", "params")
# Global ranking can score every channel of a layer below the threshold; a layer keeps at least this share
# (and at least round_to channels) so no layer is removed outright.
MIN_KEEP_FRACTION = 0.1
# The largest channel ratio the target search tries; at most SEARCH_ROUNDS search rounds, stopping early
# once a trial lands within SEARCH_TOLERANCE (relative) under the goal (each round prunes a copy: ~0.1-0.5 s).
MAX_CHANNEL_RATIO = 0.95
SEARCH_ROUNDS = 10
SEARCH_TOLERANCE = 0.01
# Rounded widths make the count a step function of the ratio: a bracket this narrow holds no other step.
SEARCH_RESOLUTION = 2 ** -8


def example_images(model: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    """One RGB 0-255 image batch on the model's device, for graph tracing and counting."""
    parameter = next(model.parameters())
    return torch.full((1, 3, *input_size), 128.0, device=parameter.device, dtype=parameter.dtype)


@torch.no_grad()
def count_macs_params(model: nn.Module, input_size: Sequence[int]) -> Dict[str, int]:
    """``{"macs": ..., "params": ...}`` of one image at ``input_size`` (Torch-Pruning's counter; eval mode)."""
    was_training = model.training
    model.eval()
    try:
        macs, params = tp.utils.count_ops_and_params(model, example_images(model, input_size))
    finally:
        model.train(was_training)
    return {"macs": int(macs), "params": int(params)}


def build_graph(model: nn.Module, input_size: Sequence[int]) -> tp.DependencyGraph:
    """The dependency graph of ``model`` traced in eval mode, with compressreid's own layer pruners (IBN)."""
    was_training = model.training
    model.eval()
    try:
        with trace_ibn_as_leaf(model):
            return tp.DependencyGraph().build_dependency(model, example_images(model, input_size),
                                                         customized_pruners=customized_pruners(), verbose=False)
    finally:
        model.train(was_training)


def kept_modules(model: nn.Module) -> List[nn.Module]:
    """Modules whose channels never change: everything outside ``model.backbone`` (heads, classifier)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ConfigError(f"pruning needs a model with a 'backbone' module; {type(model).__name__} has none")
    inside = set(backbone.modules())
    return [m for m in model.modules() if m not in inside and m is not model]


@dataclass
class Candidate:
    """One prunable group: its root layer, per-channel scores, and segments pruned in proportion
    (IBN-a: InstanceNorm and BatchNorm halves, so both keep channels and ``half`` stays half)."""

    root: str
    channels: int
    scores: torch.Tensor
    segments: List[Tuple[int, int]] = field(default_factory=list)


def _segments(group, channels: int) -> List[Tuple[int, int]] | None:
    """[(0, C)], IBN's two halves when the group carries an IBN with identity index mapping, None if unsupported."""
    segments = [(0, channels)]
    for dep, idxs in group:
        if isinstance(dep.target.module, IBN):
            plain = [int(getattr(i, "idx", i)) for i in idxs]
            if plain != list(range(channels)) or len(segments) > 1:
                return None  # an IBN reached through a concat/split or two IBNs: not worth guessing
            half = dep.target.module.half
            segments = [(0, half), (half, channels)]
    return segments


def collect_candidates(model: nn.Module, graph: tp.DependencyGraph,
                       importance: tp.importance.Importance) -> List[Candidate]:
    """Every backbone group with its scores (gradients must already be on the weights for Taylor)."""
    kept = kept_modules(model)
    kept_set = set(kept)
    names = {m: n for n, m in model.named_modules()}
    candidates = []
    for group in graph.get_all_groups(ignored_layers=kept, root_module_types=[nn.modules.conv._ConvNd, nn.Linear]):
        if any(dep.target.module in kept_set or dep.target.type == tp.ops.OPTYPE.PARAMETER for dep, _ in group):
            continue
        root = group[0].dep.target.module
        channels = len(group[0].idxs)
        segments = _segments(group, channels)
        scores = importance(group) if segments else None
        if scores is None or channels <= 1:
            continue  # nothing this criterion can score, or an unsupported IBN coupling
        candidates.append(Candidate(names[root], channels, scores.detach().float().cpu(), segments))
    return candidates


def rounded_keep(keep: float, channels: int, round_to: int, floor: int = 1) -> int:
    """Channels to keep: ``keep`` rounded to the nearest multiple of ``round_to``, at least ``floor`` and one
    multiple, at most ``channels`` (a layer narrower than ``round_to`` keeps its width)."""
    kept = round_to * max(1, round(keep / round_to), math.ceil(floor / round_to))
    return min(kept, channels)


def _keep_counts(candidates: Sequence[Candidate], ratio: float, global_ranking: bool) -> List[float]:
    """Unrounded channels to keep per candidate at channel ratio ``ratio``."""
    if not global_ranking:
        return [c.channels * (1 - ratio) for c in candidates]
    scores = torch.cat([c.scores for c in candidates])
    removed = int(len(scores) * ratio)
    if removed == 0:
        return [float(c.channels) for c in candidates]
    threshold = torch.kthvalue(scores, removed).values
    return [float(c.channels - int((c.scores <= threshold).sum())) for c in candidates]


def _choose(candidate: Candidate, keep: int) -> List[int]:
    """Indices to prune: the lowest-scoring ones, keeping ``keep`` split over the segments in proportion."""
    pruned: List[int] = []
    total = candidate.channels
    remaining = keep
    for i, (start, end) in enumerate(candidate.segments):
        size = end - start
        # IBN: keep//2 instance-norm channels, as IBN-a builds half = int(planes * 0.5)
        share = remaining if i == len(candidate.segments) - 1 else min(size, max(1, keep * size // total))
        share = min(share, size)
        remaining -= share
        order = torch.argsort(candidate.scores[start:end], descending=True, stable=True)
        pruned += sorted(int(j) + start for j in order[share:])
    return pruned


def select(candidates: Sequence[Candidate], ratio: float, round_to: int, global_ranking: bool) -> Dict[str, List[int]]:
    """Channels to prune per root layer at channel ratio ``ratio`` (local: every layer by ``ratio``; global: one
    threshold over all normalised scores), widths rounded to ``round_to``."""
    plan = {}
    for candidate, keep in zip(candidates, _keep_counts(candidates, ratio, global_ranking)):
        floor = max(1, math.ceil(candidate.channels * MIN_KEEP_FRACTION), len(candidate.segments))
        kept = rounded_keep(keep, candidate.channels, round_to, floor)
        if kept < candidate.channels:
            plan[candidate.root] = _choose(candidate, kept)
    return plan


def apply_plan(model: nn.Module, graph: tp.DependencyGraph, plan: Dict[str, List[int]]) -> List[Record]:
    """Prune ``model`` (the one ``graph`` traced) as planned; returns the history records, in order."""
    names = {m: n for n, m in model.named_modules()}
    records: List[Record] = []
    for root_name, idxs in plan.items():
        root = model.get_submodule(root_name)
        group = graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, idxs)
        records += group_records(group, names)
        group.prune()
    return records


@dataclass
class StepResult:
    """One pruning step: the channel ratio the search chose, the records applied, counts after."""

    channel_ratio: float
    records: List[Record]
    counts: Dict[str, int]


def _trial(model: nn.Module, candidates, ratio: float, round_to: int, global_ranking: bool,
           input_size: Sequence[int]) -> Dict[str, int]:
    trial = copy.deepcopy(model)
    apply_plan(trial, build_graph(trial, input_size), select(candidates, ratio, round_to, global_ranking))
    return count_macs_params(trial, input_size)


def _search_ratio(measure, current: float, goal: float) -> float:
    """The smallest channel ratio in [0, MAX_CHANNEL_RATIO] whose ``measure`` is at most ``goal``, found by
    regula falsi with the Illinois correction (counts fall smoothly with the ratio, so a few trials suffice)."""
    low, f_low = 0.0, current - goal
    if f_low <= 0:
        return 0.0  # already there (an earlier step overshot, rounding to round_to)
    high, f_high = MAX_CHANNEL_RATIO, measure(MAX_CHANNEL_RATIO) - goal
    if f_high > 0:
        logger.warning("pruning cannot reach %.0f: the prunable channels are exhausted at a ratio of %.2f",
                       goal, MAX_CHANNEL_RATIO)
        return MAX_CHANNEL_RATIO
    side = 0
    for _ in range(SEARCH_ROUNDS):
        if high - low < SEARCH_RESOLUTION:
            break
        middle = (low * f_high - high * f_low) / (f_high - f_low) if f_high != f_low else (low + high) / 2
        middle = min(max(middle, low + 1e-4), high - 1e-4)
        f_middle = measure(middle) - goal
        if f_middle <= 0:
            high, f_high = middle, f_middle
            if -f_middle <= SEARCH_TOLERANCE * goal:
                break
            if side == -1:
                f_low /= 2  # Illinois: the same end moved twice, so halve the other's weight
            side = -1
        else:
            low, f_low = middle, f_middle
            if side == 1:
                f_high /= 2
            side = 1
    return high


def prune_step(model: nn.Module, input_size: Sequence[int], importance: tp.importance.Importance, target: str,
               goal: float, round_to: int = 1, global_ranking: bool = False) -> StepResult:
    """Prune ``model`` in place until its ``target`` count ("macs"/"params") is at most ``goal``.

    The channel ratio is searched on pruned copies (fewer channels never cost more), then applied once.
    If even MAX_CHANNEL_RATIO cannot reach the goal (most channels are outside the backbone, or rounding
    holds narrow layers), that ratio is used and a warning says how far it got.
    """
    if target not in TARGETS:
        raise ConfigError(f"PRUNE.TARGET '{target}' must be one of {TARGETS}")
    graph = build_graph(model, input_size)
    candidates = collect_candidates(model, graph, importance)
    model.zero_grad(set_to_none=True)  # Taylor's gradients have been read; pruned weights must not carry them
    current = count_macs_params(model, input_size)[target]
    ratio = _search_ratio(
        lambda r: _trial(model, candidates, r, round_to, global_ranking, input_size)[target], current, goal)
    plan = select(candidates, ratio, round_to, global_ranking) if ratio > 0 else {}
    records = apply_plan(model, graph, plan)
    return StepResult(ratio, records, count_macs_params(model, input_size))
