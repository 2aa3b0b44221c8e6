"""Build the training data (merged sets, contiguous labels, P x K loader) and the named test sets."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from compressreid.data.datasets import build_dataset_from_config, merge_train_sets
from compressreid.data.image_dataset import ImageDataset, collate
from compressreid.data.records import DatasetSplits, ImageRecord
from compressreid.data.samplers import IdentityBatchSampler, SeededBatches, ShuffleBatchSampler
from compressreid.data.transforms import build_test_transform, build_train_transform
from compressreid.errors import ConfigError, DataError


@dataclass
class TrainData:
    """Derived training facts live here (the run context), never written back into the config."""

    records: List[ImageRecord]
    labels: List[int]
    num_classes: int
    label_of_pid: Dict[object, int]


def load_train_data(cfg: CfgNode) -> TrainData:
    splits = [build_dataset_from_config(name, cfg).load() for name in cfg.DATASETS.NAMES]
    if cfg.DATASETS.COMBINEALL:
        splits = [DatasetSplits(s.name, s.train + [r for r in s.query + s.gallery if r.pid not in (0, -1)], [], [])
                  for s in splits]
    records = splits[0].train if len(splits) == 1 else merge_train_sets(splits)
    if not records:
        raise DataError(f"training sets {list(cfg.DATASETS.NAMES)} contain no images")
    pids = sorted({r.pid for r in records}, key=str)
    label_of_pid = {pid: i for i, pid in enumerate(pids)}
    return TrainData(records, [label_of_pid[r.pid] for r in records], len(pids), label_of_pid)


def build_train_loader(cfg: CfgNode, data: TrainData, start_batch: int = 0, rank: int = 0,
                       world_size: int = 1) -> DataLoader:
    """Infinite loader of local batches; ``start_batch`` resumes the sampler stream.

    Each image is augmented from its own seed (see ``SeededBatches``), so a batch's content depends only on
    SEED and the batch number: not on NUM_WORKERS, the number of ranks, or where a run was restarted.
    """
    name = cfg.DATALOADER.SAMPLER_TRAIN
    common = dict(batch_size=cfg.SOLVER.IMS_PER_BATCH, seed=cfg.SEED, rank=rank, world_size=world_size,
                  start_batch=start_batch)
    if name == "NaiveIdentitySampler":
        sampler = IdentityBatchSampler(data.labels, num_instances=cfg.DATALOADER.NUM_INSTANCE, **common)
    elif name == "TrainingSampler":
        sampler = ShuffleBatchSampler(data.labels, **common)
    else:
        raise ConfigError(f"DATALOADER.SAMPLER_TRAIN '{name}' must be NaiveIdentitySampler or TrainingSampler")
    dataset = ImageDataset(data.records, build_train_transform(cfg), data.labels, cfg.DATASETS.ON_CORRUPT_IMAGE)
    workers = cfg.DATALOADER.NUM_WORKERS
    return DataLoader(SeededSamples(dataset), batch_sampler=SeededBatches(sampler), num_workers=workers,
                      collate_fn=collate, generator=torch.Generator().manual_seed(cfg.SEED),
                      persistent_workers=workers > 0)


def close_batches(batches: object) -> None:
    """Stop the worker processes behind a DataLoader iterator now, in the process that started them.

    Left to the garbage collector (an iterator held by objects that reference each other, or by a frame that
    outlives its call), the iterator may be collected in a process forked later, such as another loader's worker,
    whose attempt to stop workers it does not own fails there with "AssertionError: can only test a child
    process", printed once per worker. torch's iterator has no public close: ``_shutdown_workers`` is what its own
    ``__del__`` calls, and it does nothing the second time. Other iterables are left alone.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


class SeededSamples(torch.utils.data.Dataset):
    """Reads ``dataset[index]`` with every random generator seeded from the item's own seed.

    Items are ``(index, seed)`` pairs. The global generators are restored afterwards: with NUM_WORKERS 0 this
    runs in the training process, whose random stream must not depend on the data.
    """

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int]) -> object:
        index, seed = item
        with _seeded_generators(seed):
            return self.dataset[index]


@contextlib.contextmanager
def _seeded_generators(seed: int) -> Iterator[None]:
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    # the CPU generator only: torch.manual_seed would also reseed CUDA, which augmentation never uses
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def load_test_sets(cfg: CfgNode, names: Sequence[str] = ()) -> List[DatasetSplits]:
    """Every DATASETS.TESTS entry as its own named query/gallery pair."""
    test_sets = []
    for name in names or cfg.DATASETS.TESTS:
        splits = build_dataset_from_config(name, cfg).load()
        if not splits.query or not splits.gallery:
            raise DataError(f"test set {name}: empty {'query' if not splits.query else 'gallery'} split")
        test_sets.append(splits)
    return test_sets


def build_test_loader(cfg: CfgNode, records: Sequence[ImageRecord]) -> DataLoader:
    dataset = ImageDataset(records, build_test_transform(cfg), on_corrupt=cfg.DATASETS.ON_CORRUPT_IMAGE)
    return DataLoader(dataset, batch_size=cfg.TEST.IMS_PER_BATCH, shuffle=False,
                      num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=collate)
