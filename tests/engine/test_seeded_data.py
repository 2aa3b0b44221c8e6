"""Per-image augmentation seeds: a batch's content depends on (SEED, batch number) only, never on workers,
ranks or restarts."""

from __future__ import annotations

import random
from itertools import islice

import numpy as np
import pytest
import torch
from PIL import Image

from compressreid.config import get_cfg
from compressreid.data.build import SeededSamples, TrainData, build_train_loader
from compressreid.data.records import ImageRecord
from compressreid.data.samplers import IdentityBatchSampler, SeededBatches, ShuffleBatchSampler

PIDS = [i % 6 for i in range(48)]


def take(iterable, n):
    return list(islice(iter(iterable), n))


@pytest.mark.parametrize("make", [lambda **kw: IdentityBatchSampler(PIDS, 16, 4, seed=3, **kw),
                                  lambda **kw: ShuffleBatchSampler(PIDS, 16, seed=3, **kw)])
def test_rank_slices_and_resumed_streams_carry_the_single_process_seeds(make):
    single = take(SeededBatches(make()), 7)
    assert all(len({seed for _, seed in batch}) == len(batch) for batch in single)  # one seed per image
    assert single[0] != take(SeededBatches(make(start_batch=1)), 1)[0]
    assert take(SeededBatches(make(start_batch=4)), 3) == single[4:]  # crosses epoch boundaries too
    ranks = [take(SeededBatches(make(rank=r, world_size=2)), 7) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == single


class RandomItems(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.rand(2), np.random.rand(), random.random(), index


def test_seeded_samples_are_a_function_of_the_seed_and_leave_the_global_generators_alone():
    data = SeededSamples(RandomItems())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    first, again, other = data[(1, 7)], data[(1, 7)], data[(1, 8)]
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
    assert not torch.equal(first[0], other[0]) and first[1] != other[1] and first[2] != other[2]
    # as if no item had been read: the training process's own streams are untouched
    torch.manual_seed(0)
    expected = torch.rand(3)
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    data[(2, 9)]
    assert torch.equal(torch.rand(3), expected)


def test_loader_batches_do_not_depend_on_workers_or_restarts(tmp_path):
    records = []
    for i in range(24):  # 6 identities x 4 images, each image different
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(path=str(path), pid=i % 6, camid=i % 2))
    data = TrainData(records, [r.pid for r in records], 6, {p: p for p in range(6)})
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.SIZE_TRAIN", "[16, 8]", "INPUT.PADDING.ENABLED", "True", "INPUT.REA.ENABLED", "True",
                         "INPUT.REA.PROB", "0.5", "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2"])
    cfg.DATALOADER.NUM_WORKERS = 0
    inline = [b["images"] for b in take(build_train_loader(cfg, data), 4)]
    resumed = [b["images"] for b in take(build_train_loader(cfg, data, start_batch=2), 2)]
    cfg.DATALOADER.NUM_WORKERS = 2
    workers = [b["images"] for b in take(build_train_loader(cfg, data), 4)]
    assert all(torch.equal(a, b) for a, b in zip(inline, workers))
    assert all(torch.equal(a, b) for a, b in zip(inline[2:], resumed))
    assert not torch.equal(inline[0], inline[1])
