"""Source formats of model state dicts, each detected by explicit key signatures and converted by an explicit map.

- ``fastreid-v1``: fast-reid v1.x and compressreid (``heads.bottleneck.*``, classifier ``heads.weight``).
- ``fastreid-v1.0``: fast-reid's late-2020 code (classifier module ``heads.classifier.weight``, stored
  ``pixel_mean``/``pixel_std``).
- ``fastreid-modelzoo``: the generation most MODEL_ZOO files were written by (``BNneckHead``:
  ``heads.bnneck.*``, ``heads.classifier.weight``, stored ``pixel_mean``/``pixel_std``; fast-reid issues
  #427, #486, #617).
- ``fastreid-modelzoo-mgn``: that generation's MGN (``b1_pool.*``, #508): each branch runs pool -> 1x1 conv -> BN
  -> ReLU (``b*_pool.0..3``) -> BNneckHead (``b*_head.bnneck``, ``b*_head.classifier``), a stack the v1.x MGN
  does not have; it maps onto the ``EmbeddingHead`` with ``MODEL.HEADS.REDUCTION_BN_RELU`` (``bottleneck.0``
  conv, ``.1`` BN, ``.2`` ReLU, ``.3`` BNNeck). A file and a model that disagree on that stack are refused
  before anything loads (``check_reduction_stack``): the reduction's BN has a BNNeck's shape. v0.x shared one
  GeM module (one ``p``) across the eight branches; each head gets its own copy of the value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping

import torch

from compressreid.errors import CheckpointError

logger = logging.getLogger(__name__)

# MGN's eight branches and their heads (fast-reid's names); Baseline has one head, "heads".
MGN_BRANCHES = ("b1", "b2", "b3", "b21", "b22", "b31", "b32", "b33")
HEAD_PREFIXES = ("heads", *(f"{branch}_head" for branch in MGN_BRANCHES))
# The identity classifier of a head after conversion: sized for the training set, unused by the embedding.
CLASSIFIER_KEYS = frozenset(f"{prefix}.weight" for prefix in HEAD_PREFIXES)
# Buffers older fast-reid registered as persistent; compressreid keeps them in PixelNormalizer (not saved).
PIXEL_STAT_KEYS = ("pixel_mean", "pixel_std")
_BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_DATA_PARALLEL_PREFIX = "module."


@dataclass
class Converted:
    """A state dict renamed into compressreid's names, plus what the conversion took out of it."""

    state: Dict[str, torch.Tensor]
    pixel_stats: Dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointFormat:
    """A source format: how to recognise it from its keys, and the explicit old-name -> new-name map."""

    name: str
    description: str
    matches: Callable[[Iterable[str]], bool]
    renames: Mapping[str, str]
    has_pixel_stats: bool = False

    def convert(self, state: Mapping[str, torch.Tensor]) -> Converted:
        """Rename keys by the map; other keys pass through unchanged (and are checked against the model later)."""
        out = Converted({})
        for key, value in state.items():
            if self.has_pixel_stats and key in PIXEL_STAT_KEYS:
                out.pixel_stats[key] = value
            else:
                out.state[self.renames.get(key, key)] = value
        return out


def _classifier_module_map() -> Dict[str, str]:
    return {f"{prefix}.classifier.weight": f"{prefix}.weight" for prefix in HEAD_PREFIXES}


def _bnneck_map() -> Dict[str, str]:
    renames = _classifier_module_map()
    for prefix in HEAD_PREFIXES:
        renames.update({f"{prefix}.bnneck.{entry}": f"{prefix}.bottleneck.0.{entry}" for entry in _BN_ENTRIES})
    return renames


def _has_any(keys: Iterable[str], wanted: Iterable[str]) -> bool:
    wanted = set(wanted)
    return any(key in wanted for key in keys)


def _modelzoo_mgn_map() -> Dict[str, str]:
    """``b*_pool`` = (pool, 1x1 conv, BN, ReLU) and ``b*_head`` = BNneckHead -> one EmbeddingHead per branch."""
    renames = _bnneck_map()
    for branch in MGN_BRANCHES:
        head = f"{branch}_head"
        renames[f"{branch}_pool.0.p"] = f"{head}.pool_layer.p"  # GeM's p (one module shared by all 8 pools)
        renames[f"{branch}_pool.1.weight"] = f"{head}.bottleneck.0.weight"
        renames.update({f"{branch}_pool.2.{entry}": f"{head}.bottleneck.1.{entry}" for entry in _BN_ENTRIES})
        renames.update({f"{head}.bnneck.{entry}": f"{head}.bottleneck.3.{entry}" for entry in _BN_ENTRIES})
    return renames


_MODELZOO_MGN_KEYS = frozenset(("b1_pool.1.weight", "b1_pool.2.weight", "b1_pool.2.bias"))  # conv, BN
_BNNECK_KEYS = frozenset(f"{prefix}.bnneck.weight" for prefix in HEAD_PREFIXES)
_CLASSIFIER_MODULE_KEYS = frozenset(_classifier_module_map())

MODELZOO_MGN = CheckpointFormat(
    "fastreid-modelzoo-mgn",
    "fast-reid model-zoo generation MGN (b*_pool.*, b*_head.bnneck.*, stored pixel_mean/pixel_std)",
    lambda keys: _has_any(keys, _MODELZOO_MGN_KEYS),
    _modelzoo_mgn_map(),
    has_pixel_stats=True,
)
MODELZOO = CheckpointFormat(
    "fastreid-modelzoo",
    "fast-reid model-zoo generation (heads.bnneck.*, heads.classifier.weight, stored pixel_mean/pixel_std)",
    lambda keys: _has_any(keys, _BNNECK_KEYS),
    _bnneck_map(),
    has_pixel_stats=True,
)
V1_0 = CheckpointFormat(
    "fastreid-v1.0",
    "fast-reid v1.0 (heads.bottleneck.*, heads.classifier.weight, stored pixel_mean/pixel_std)",
    lambda keys: _has_any(keys, _CLASSIFIER_MODULE_KEYS),
    _classifier_module_map(),
    has_pixel_stats=True,
)
V1 = CheckpointFormat(
    "fastreid-v1",
    "fast-reid v1.x / compressreid (heads.bottleneck.*, heads.weight)",
    lambda keys: True,
    {},
    has_pixel_stats=True,  # v1.x does not store them; a file that does still means them as the normalisation
)
# Most specific first: the first whose signature matches is the format.
FORMATS: List[CheckpointFormat] = [MODELZOO_MGN, MODELZOO, V1_0, V1]


def check_reduction_stack(model_keys: Iterable[str], state: Mapping[str, torch.Tensor]) -> None:
    """Refuse, before anything loads, a head whose reduction stack differs between the file and the model.

    With REDUCTION_BN_RELU a head's BNNeck is ``bottleneck.3`` and ``bottleneck.1`` is the reduction's BN, which
    has the shape of a plain head's BNNeck (``bottleneck.1`` after a reduction): loaded across the two layouts,
    that BN would land in the wrong layer without a shape error.

    Raises:
        CheckpointError: naming the setting that makes the model match the file.
    """
    model_keys = set(model_keys)
    for prefix in HEAD_PREFIXES:
        stack_key = f"{prefix}.bottleneck.3.running_mean"
        in_model, in_file = stack_key in model_keys, stack_key in state
        if in_file and not in_model:
            conv = state.get(f"{prefix}.bottleneck.0.weight")
            width = conv.shape[0] if conv is not None else "<its reduction width>"
            raise CheckpointError(
                f"the checkpoint's {prefix} reduces to {width} channels with BN + ReLU before its BNNeck (fast-reid's "
                f"model-zoo generation MGN); build the model with MODEL.HEADS.EMBEDDING_DIM {width} and "
                "MODEL.HEADS.REDUCTION_BN_RELU True (that generation's own yaml sets both)")
        if in_model and not in_file and f"{prefix}.bottleneck.1.running_mean" in state:
            raise CheckpointError(f"the checkpoint's {prefix} has no BN + ReLU after its reduction; build the model "
                                  "with MODEL.HEADS.REDUCTION_BN_RELU False")


def strip_data_parallel_prefix(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix a (Distributed)DataParallel-wrapped model saves with, when every key has it."""
    if state and all(key.startswith(_DATA_PARALLEL_PREFIX) for key in state):
        logger.info("stripping the DataParallel prefix '%s' from every key", _DATA_PARALLEL_PREFIX)
        return {key[len(_DATA_PARALLEL_PREFIX):]: value for key, value in state.items()}
    return dict(state)


def detect_format(state: Mapping[str, torch.Tensor]) -> CheckpointFormat:
    """The first format in ``FORMATS`` whose key signature the state dict shows."""
    keys = list(state)
    return next(fmt for fmt in FORMATS if fmt.matches(keys))
