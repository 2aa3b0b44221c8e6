"""Identity-balanced P x K batch sampling: reproducible from the seed, resumable, DDP-aware."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from compressreid.errors import ConfigError, DataError


class EpochBatchStream:
    """An infinite stream of global batches built epoch by epoch from (seed, epoch); each rank keeps a slice.

    Subclasses implement ``epoch_batches``. ``start_batch`` skips already-consumed global batches, which is
    how a resumed run continues with the same stream.
    """

    batch_size: int
    seed: int
    rank: int
    world_size: int
    start_batch: int

    def _check_world(self, batch_size: int, world_size: int) -> None:
        if batch_size % world_size:
            raise ConfigError(f"SOLVER.IMS_PER_BATCH ({batch_size}) must split evenly across {world_size} processes")

    def epoch_batches(self, epoch: int) -> List[List[int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def numbered_batches(self) -> Iterator[Tuple[int, int, List[int]]]:
        """(global batch number, position of this rank's first image in the global batch, local indices)."""
        per_rank = self.batch_size // self.world_size
        lo = self.rank * per_rank
        number, epoch = 0, 0
        while True:
            batches = self.epoch_batches(epoch)
            if not batches:
                raise DataError("the batch sampler produced no batch; check identities and batch size")
            for batch in batches:
                if number >= self.start_batch:
                    yield number, lo, batch[lo : lo + per_rank]
                number += 1
            epoch += 1

    def __iter__(self) -> Iterator[List[int]]:
        for _, _, batch in self.numbered_batches():
            yield batch

    def __len__(self) -> int:
        """Batches in epoch 0 (epochs can differ by a batch; the stream itself is infinite)."""
        return len(self.epoch_batches(0))


class IdentityBatchSampler(EpochBatchStream):
    """Yields local batches of P identities x K images, forever.

    Every rank builds the same global batch (``batch_size`` = SOLVER.IMS_PER_BATCH, as in fast-reid)
    from ``seed`` and the epoch, then keeps its own contiguous slice: ranks see disjoint images and
    together see exactly the single-process batch. ``start_batch`` skips already-consumed batches,
    which is how a resumed run continues with the same stream.

    Args:
        pids: identity label of every training image (index = dataset index).
        batch_size: global batch size, a multiple of ``num_instances``.
        num_instances: K, images per identity in a batch.
        seed: seed of the whole stream.
        rank, world_size: this process's share; batch_size must split evenly across ranks.
        start_batch: number of global batches to skip.
    """

    def __init__(
        self,
        pids: Sequence,
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ):
        if num_instances < 1 or batch_size % num_instances:
            raise ConfigError(
                f"SOLVER.IMS_PER_BATCH ({batch_size}) must be a multiple of DATALOADER.NUM_INSTANCE ({num_instances})"
            )
        self._check_world(batch_size, world_size)
        self.index_by_pid: Dict[object, List[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self.index_by_pid[pid].append(index)
        self.pid_order = sorted(self.index_by_pid, key=str)
        self.num_pids_per_batch = batch_size // num_instances
        if len(self.pid_order) < self.num_pids_per_batch:
            raise DataError(
                f"training set has {len(self.pid_order)} identities, fewer than the "
                f"{self.num_pids_per_batch} a batch of {batch_size} x K={num_instances} needs"
            )
        self.batch_size, self.num_instances, self.seed = batch_size, num_instances, seed
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch

    def epoch_batches(self, epoch: int) -> List[List[int]]:
        """The global batches of one epoch, a pure function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        chunks: Dict[object, List[List[int]]] = {}
        for pid in self.pid_order:
            indices = np.array(self.index_by_pid[pid])
            if len(indices) < self.num_instances:  # too few images: sample with replacement up to K
                indices = rng.choice(indices, self.num_instances, replace=True)
            indices = rng.permutation(indices)
            usable = len(indices) - len(indices) % self.num_instances
            chunks[pid] = [indices[i : i + self.num_instances].tolist() for i in range(0, usable, self.num_instances)]
        batches = []
        while True:
            available = [pid for pid in self.pid_order if chunks[pid]]
            if len(available) < self.num_pids_per_batch:
                return batches
            chosen = rng.choice(len(available), self.num_pids_per_batch, replace=False)
            batches.append([i for c in chosen for i in chunks[available[c]].pop()])


class ShuffleBatchSampler(EpochBatchStream):
    """Plain shuffled batches (fast-reid's TrainingSampler), same stream/resume/DDP contract."""

    def __init__(self, pids: Sequence, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_batch: int = 0):
        self._check_world(batch_size, world_size)
        self.num_images = len(pids)
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch

    def epoch_batches(self, epoch: int) -> List[List[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_images).tolist()
        return [order[i : i + self.batch_size] for i in range(0, len(order) - self.batch_size + 1, self.batch_size)]


def sample_seeds(seed: int, batch_number: int, count: int) -> List[int]:
    """Augmentation seeds of the ``count`` positions of global batch ``batch_number``: a pure function."""
    return np.random.SeedSequence([seed, 0x5EED, batch_number]).generate_state(count, dtype=np.uint32).tolist()


class SeededBatches:
    """Wraps a batch stream to yield ``(index, sample_seed)`` pairs instead of indices.

    The seed of an image is a function of (stream seed, global batch number, position in the global batch), so
    its augmentation is the same whatever the number of loader workers, ranks or restarts.
    """

    def __init__(self, stream: EpochBatchStream):
        self.stream = stream

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        for number, lo, batch in self.stream.numbered_batches():
            seeds = sample_seeds(self.stream.seed, number, self.stream.batch_size)[lo : lo + len(batch)]
            yield list(zip(batch, seeds))

    def __len__(self) -> int:
        return len(self.stream)

