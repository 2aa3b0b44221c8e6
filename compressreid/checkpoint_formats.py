"""Source formats of model state dicts, each detected by explicit key signatures and converted by an explicit map.

- ``fastreid-v1``: fast-reid v1.x and compressreid (``heads.bottleneck.*``, classifier ``heads.weight``).
- ``fastreid-v1.0``: fast-reid's late-2020 code (classifier module ``heads.classifier.weight``, stored
  ``pixel_mean``/``pixel_std``).
- ``fastreid-modelzoo``: the generation most MODEL_ZOO files were written by (``BNneckHead``:
  ``heads.bnneck.*``, ``heads.classifier.weight``, stored ``pixel_mean``/``pixel_std``; fast-reid issues
  #427, #486, #617).
- ``fastreid-modelzoo-mgn``: that generation's MGN (``b1_pool.*``): its branches run pool -> 1x1 conv -> BN
  -> ReLU -> BNNeck, a layer stack the v1.x MGN does not have, so it is refused, never half-loaded (#508).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping

import torch

from compressreid.errors import CheckpointError

logger = logging.getLogger(__name__)

# Module names of embedding heads: Baseline's one head and MGN's eight (fast-reid's names).
HEAD_PREFIXES = ("heads", "b1_head", "b2_head", "b3_head", "b21_head", "b22_head", "b31_head", "b32_head",
                 "b33_head")
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
    refusal: str = ""  # non-empty: the format is recognised but cannot be represented; say why

    def convert(self, state: Mapping[str, torch.Tensor]) -> Converted:
        """Rename keys by the map; other keys pass through unchanged (and are checked against the model later)."""
        if self.refusal:
            raise CheckpointError(self.refusal)
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


_MODELZOO_MGN_KEYS = frozenset(f"b1_pool.{index}.{entry}" for index in (1, 2) for entry in ("weight", "bias"))
_BNNECK_KEYS = frozenset(f"{prefix}.bnneck.weight" for prefix in HEAD_PREFIXES)
_CLASSIFIER_MODULE_KEYS = frozenset(_classifier_module_map())

MODELZOO_MGN = CheckpointFormat(
    "fastreid-modelzoo-mgn",
    "fast-reid model-zoo generation MGN (b*_pool.*, b*_head.bnneck.*)",
    lambda keys: _has_any(keys, _MODELZOO_MGN_KEYS),
    {},
    refusal=("fast-reid model-zoo generation MGN checkpoint (keys b1_pool.*): its branches run pool -> 1x1 conv -> "
             "BN -> ReLU -> BNNeck, which fast-reid v1.x's MGN (and compressreid's) does not have, so its "
             "embeddings cannot be reproduced; fast-reid v1.x cannot load it either (fast-reid issue #508). "
             "Use an MGN checkpoint written by fast-reid v1.x"),
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
