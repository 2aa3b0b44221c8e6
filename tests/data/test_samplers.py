"""P x K and shuffle batch samplers (reproducible, resumable, DDP slices), transforms and corrupt-image handling."""

from collections import Counter
from itertools import islice

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from compressreid.config import get_cfg
from compressreid.data.image_dataset import ImageDataset, collate
from compressreid.data.records import ImageRecord
from compressreid.data.samplers import IdentityBatchSampler, ShuffleBatchSampler
from compressreid.data.transforms import build_test_transform, build_train_transform
from compressreid.errors import ConfigError, DataError


def make_pids(images_per_id):
    """Dataset index -> pid, identities interleaved so an identity's images are not contiguous."""
    pids = [pid for pid, count in enumerate(images_per_id) for _ in range(count)]
    order = np.random.default_rng(123).permutation(len(pids))
    return [pids[i] for i in order]


PIDS = make_pids([6, 4, 9, 5, 8, 4, 7, 12, 5, 6])  # 10 identities, 66 images


def take(sampler, n):
    return list(islice(iter(sampler), n))


# -- IdentityBatchSampler ---------------------------------------------------------------------------------------


def assert_p_by_k(batch, pids, p, k):
    assert len(batch) == p * k
    counts = Counter(pids[i] for i in batch)
    assert len(counts) == p
    assert set(counts.values()) == {k}
    for start in range(0, len(batch), k):  # K consecutive images of one identity
        assert len({pids[i] for i in batch[start : start + k]}) == 1


def test_every_batch_is_p_identities_by_k_images():
    sampler = IdentityBatchSampler(PIDS, batch_size=16, num_instances=4, seed=0)
    batches = take(sampler, 3 * len(sampler) + 1)  # several epochs
    for batch in batches:
        assert_p_by_k(batch, PIDS, p=4, k=4)
        assert len(set(batch)) == len(batch)  # every identity has >= K images: no repeats inside a batch


def test_an_epoch_uses_each_image_at_most_once():
    sampler = IdentityBatchSampler(PIDS, batch_size=8, num_instances=2, seed=4)
    epoch = sampler.epoch_batches(0)
    flat = [i for batch in epoch for i in batch]
    assert len(flat) == len(set(flat))
    assert len(sampler) == len(epoch) > 0
    assert all(0 <= i < len(PIDS) for i in flat)


def test_same_seed_same_stream_different_seed_different():
    first = take(IdentityBatchSampler(PIDS, 16, 4, seed=7), 20)
    again = take(IdentityBatchSampler(PIDS, 16, 4, seed=7), 20)
    other = take(IdentityBatchSampler(PIDS, 16, 4, seed=8), 20)
    assert first == again
    assert first != other


def test_epochs_differ():
    sampler = IdentityBatchSampler(PIDS, 16, 4, seed=0)
    assert sampler.epoch_batches(0) != sampler.epoch_batches(1)
    assert sampler.epoch_batches(1) == sampler.epoch_batches(1)  # a pure function of (seed, epoch)


def test_two_ranks_split_the_single_process_batch():
    single = take(IdentityBatchSampler(PIDS, 16, 4, seed=3), 12)
    rank0 = take(IdentityBatchSampler(PIDS, 16, 4, seed=3, rank=0, world_size=2), 12)
    rank1 = take(IdentityBatchSampler(PIDS, 16, 4, seed=3, rank=1, world_size=2), 12)
    for whole, a, b in zip(single, rank0, rank1):
        assert len(a) == len(b) == 8
        assert not set(a) & set(b)
        assert a + b == whole


@pytest.mark.parametrize("start", [1, 5])
def test_start_batch_continues_the_stream(start):
    full = take(IdentityBatchSampler(PIDS, 16, 4, seed=2), start + 6)
    resumed = take(IdentityBatchSampler(PIDS, 16, 4, seed=2, start_batch=start), 6)
    assert resumed == full[start:]


def test_start_batch_across_an_epoch_boundary():
    sampler = IdentityBatchSampler(PIDS, 16, 4, seed=2)
    per_epoch = len(sampler.epoch_batches(0))
    start = per_epoch - 1  # the last batch of epoch 0, then epoch 1
    full = take(sampler, start + per_epoch + 2)
    resumed = take(IdentityBatchSampler(PIDS, 16, 4, seed=2, start_batch=start), per_epoch + 2)
    assert resumed == full[start:]
    assert resumed[1] == sampler.epoch_batches(1)[0]


def test_start_batch_with_ranks():
    full = take(IdentityBatchSampler(PIDS, 16, 4, seed=5, rank=1, world_size=2), 9)
    resumed = take(IdentityBatchSampler(PIDS, 16, 4, seed=5, rank=1, world_size=2, start_batch=4), 5)
    assert resumed == full[4:]


def test_identity_with_fewer_than_k_images_is_sampled_with_replacement():
    pids = [0] * 4 + [1] * 4 + [2] * 1 + [3] * 2  # identities 2 and 3 have fewer than K=4 images
    sampler = IdentityBatchSampler(pids, batch_size=8, num_instances=4, seed=0)
    seen = Counter()
    for batch in take(sampler, 40):
        assert_p_by_k(batch, pids, p=2, k=4)
        for start in range(0, 8, 4):
            chunk = batch[start : start + 4]
            seen[pids[chunk[0]]] += 1
            if pids[chunk[0]] == 2:
                assert chunk == [8, 8, 8, 8]
            if pids[chunk[0]] == 3:
                assert set(chunk) <= {9, 10} and len(set(chunk)) < 4
    assert seen[2] > 0 and seen[3] > 0  # the short identities are not dropped


def test_string_identities():
    pids = ["market_1", "market_2", "duke_1", "duke_2"] * 4
    for batch in take(IdentityBatchSampler(pids, 8, 4, seed=0), 4):
        assert_p_by_k(batch, pids, 2, 4)


@pytest.mark.parametrize(
    "batch_size, k, world_size",
    [(10, 4, 1), (16, 0, 1), (16, 4, 3), (16, 5, 1)],
)
def test_bad_batch_size_is_a_config_error(batch_size, k, world_size):
    with pytest.raises(ConfigError, match="IMS_PER_BATCH"):
        IdentityBatchSampler(PIDS, batch_size, k, world_size=world_size)


def test_too_few_identities_is_a_data_error():
    with pytest.raises(DataError, match="3 identities"):
        IdentityBatchSampler([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], batch_size=16, num_instances=4)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=9), min_size=3, max_size=12),
    k=st.sampled_from([1, 2, 4]),
    p=st.integers(min_value=1, max_value=3),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_p_by_k_property(counts, k, p, seed):
    pids = make_pids(counts)
    sampler = IdentityBatchSampler(pids, batch_size=p * k, num_instances=k, seed=seed)
    for batch in take(sampler, 5):
        assert_p_by_k(batch, pids, p, k)


# -- ShuffleBatchSampler ----------------------------------------------------------------------------------------


def test_shuffle_sampler_batches_and_epoch_coverage():
    pids = list(range(30))
    sampler = ShuffleBatchSampler(pids, batch_size=8, seed=1)
    epoch = sampler.epoch_batches(0)
    assert len(epoch) == len(sampler) == 3  # 30 // 8, the remainder dropped
    flat = [i for batch in epoch for i in batch]
    assert all(len(batch) == 8 for batch in epoch) and len(set(flat)) == 24


def test_shuffle_sampler_seed_ranks_and_resume():
    pids = list(range(30))
    single = take(ShuffleBatchSampler(pids, 8, seed=1), 7)
    assert single == take(ShuffleBatchSampler(pids, 8, seed=1), 7)
    assert single != take(ShuffleBatchSampler(pids, 8, seed=2), 7)
    rank0 = take(ShuffleBatchSampler(pids, 8, seed=1, rank=0, world_size=2), 7)
    rank1 = take(ShuffleBatchSampler(pids, 8, seed=1, rank=1, world_size=2), 7)
    assert [a + b for a, b in zip(rank0, rank1)] == single
    assert all(not set(a) & set(b) for a, b in zip(rank0, rank1))
    assert take(ShuffleBatchSampler(pids, 8, seed=1, start_batch=2), 5) == single[2:]  # crosses epoch 0 -> 1


def test_shuffle_sampler_bad_world_size_and_too_small_dataset():
    with pytest.raises(ConfigError):
        ShuffleBatchSampler(list(range(30)), 8, world_size=3)
    with pytest.raises(DataError):
        next(iter(ShuffleBatchSampler(list(range(5)), 8)))


# -- transforms -------------------------------------------------------------------------------------------------


@pytest.fixture
def small_cfg():
    cfg = get_cfg()
    cfg.INPUT.SIZE_TRAIN = [64, 32]
    cfg.INPUT.SIZE_TEST = [64, 32]
    return cfg


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(128, 48, 3), dtype=np.uint8), "RGB")


def test_train_transform_gives_float_0_255(small_cfg, photo):
    torch.manual_seed(0)
    transform = build_train_transform(small_cfg)
    for _ in range(5):  # random flip / crop / erasing
        out = transform(photo)
        assert out.dtype == torch.float32
        assert out.shape == (3, 64, 32)
        assert out.min() >= 0 and out.max() <= 255
        assert out.max() > 1.0  # 0-255, not rescaled to 0-1


def test_train_transform_random_erasing_fills_on_the_0_255_scale(small_cfg):
    small_cfg.INPUT.REA.PROB = 1.0
    small_cfg.INPUT.FLIP.ENABLED = False
    small_cfg.INPUT.PADDING.ENABLED = False
    small_cfg.INPUT.REA.VALUE = [11.0, 22.0, 33.0]
    torch.manual_seed(0)
    out = build_train_transform(small_cfg)(Image.new("RGB", (32, 64), (200, 200, 200)))
    erased = out[0] != 200.0
    assert erased.any()
    assert torch.all(out[:, erased] == torch.tensor([[11.0], [22.0], [33.0]]))


def test_test_transform_keeps_pixel_values_and_rgb_order(small_cfg):
    out = build_test_transform(small_cfg)(Image.new("RGB", (50, 100), (200, 100, 50)))
    assert out.dtype == torch.float32 and out.shape == (3, 64, 32)
    assert torch.equal(out[0], torch.full((64, 32), 200.0))
    assert torch.equal(out[1], torch.full((64, 32), 100.0))
    assert torch.equal(out[2], torch.full((64, 32), 50.0))


def test_test_transform_is_deterministic(small_cfg, photo):
    transform = build_test_transform(small_cfg)
    assert torch.equal(transform(photo), transform(photo))


# -- ImageDataset and corrupt images ----------------------------------------------------------------------------


@pytest.fixture
def records(tmp_path):
    good = tmp_path / "0001_c1s1_000001_01.jpg"
    Image.new("RGB", (16, 32), (10, 20, 30)).save(good)
    corrupt = tmp_path / "0002_c2s1_000002_01.jpg"
    corrupt.write_bytes(b"\x00garbage, not a jpeg\xff" * 8)
    return [ImageRecord(str(good), 1, 0), ImageRecord(str(corrupt), 2, 1)]


def test_readable_item(records, small_cfg):
    dataset = ImageDataset(records, build_test_transform(small_cfg), labels=[0, 1])
    item = dataset[0]
    assert item["images"].shape == (3, 64, 32) and item["images"].dtype == torch.float32
    assert (item["targets"], item["camids"], item["indices"]) == (0, 0, 0)
    assert len(dataset) == 2


def test_test_items_have_target_minus_one(records, small_cfg):
    assert ImageDataset(records[:1], build_test_transform(small_cfg))[0]["targets"] == -1


def test_corrupt_image_fails_naming_the_path(records, small_cfg):
    dataset = ImageDataset(records, build_test_transform(small_cfg), on_corrupt="fail")
    with pytest.raises(DataError) as info:
        dataset[1]
    assert records[1].path in str(info.value)


def test_missing_image_fails_naming_the_path(tmp_path, small_cfg):
    missing = str(tmp_path / "gone.jpg")
    with pytest.raises(DataError, match="gone.jpg"):
        ImageDataset([ImageRecord(missing, 1, 0)], build_test_transform(small_cfg))[0]


def test_corrupt_image_skipped_and_counted(records, small_cfg):
    dataset = ImageDataset(records, build_test_transform(small_cfg), labels=[0, 1], on_corrupt="skip")
    assert dataset[1] is None
    batch = collate([dataset[0], dataset[1], dataset[0]])
    assert batch["skipped"] == 1
    assert batch["images"].shape == (2, 3, 64, 32)
    assert batch["targets"].tolist() == [0, 0]
    assert batch["indices"].tolist() == [0, 0]


def test_collate_of_only_corrupt_items(records):
    batch = collate([None, None])
    assert batch["skipped"] == 2
    assert batch["images"].shape[0] == 0 and batch["indices"].numel() == 0


def test_collate_without_corrupt_items_counts_zero(records, small_cfg):
    dataset = ImageDataset(records[:1], build_test_transform(small_cfg))
    assert collate([dataset[0]])["skipped"] == 0


def test_unknown_corrupt_mode_is_a_config_error(records):
    with pytest.raises(ConfigError, match="ON_CORRUPT_IMAGE"):
        ImageDataset(records, lambda image: image, on_corrupt="ignore")
