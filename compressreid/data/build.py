"""Build the training data (merged sets, contiguous labels, P x K loader) and the named test sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from compressreid.data.datasets import build_dataset_from_config, merge_train_sets
from compressreid.data.image_dataset import ImageDataset, collate
from compressreid.data.records import DatasetSplits, ImageRecord
from compressreid.data.samplers import IdentityBatchSampler, ShuffleBatchSampler
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
    """Infinite loader of local batches; ``start_batch`` resumes the sampler stream."""
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
    return DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=collate,
                      worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(cfg.SEED),
                      persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy/random follow it for reproducible augmentation
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


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
