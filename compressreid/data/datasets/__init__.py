"""ReID datasets read from their published folder layouts; importing this package registers every loader."""

from __future__ import annotations

from compressreid.data.datasets import cuhk03, dukemtmc, market1501, msmt17, vehicleid, veri, veriwild  # noqa: F401
from compressreid.data.datasets import synthetic  # noqa: F401
from compressreid.data.datasets.base import DATASETS, ReIDDataset, merge_train_sets
from compressreid.errors import ConfigError

__all__ = ["DATASETS", "ReIDDataset", "build_dataset", "build_dataset_from_config", "merge_train_sets"]


def _lookup(name: str):
    try:
        return DATASETS.get(name)
    except KeyError as error:
        raise ConfigError(error.args[0]) from None


def build_dataset_from_config(name: str, cfg) -> ReIDDataset:
    """Instantiate a registered dataset with its options from the config (DATASETS.ROOT, SEED, ...)."""
    return _lookup(name).from_config(cfg)


def build_dataset(name: str, root: str, seed: int = 0) -> ReIDDataset:
    """Instantiate a registered dataset (nothing is read until ``load()``).

    Args:
        name: registered name, e.g. ``"Market1501"``.
        root: the folder that contains each dataset's own folder (``DATASETS.ROOT``).
        seed: seed for datasets whose split involves a random draw.

    Raises:
        ConfigError: ``name`` is not registered; the message lists the valid names.
    """
    return _lookup(name)(root, seed=seed)
