"""Budgets are range-checked when a config is loaded: a bad value is one ConfigError naming the key and its range,
before any tool creates a folder (``SOLVER.MAX_EPOCH -1`` used to train no iterations and ship the untrained model)."""

from __future__ import annotations

import pytest
import yaml

from compressreid.config import load_config
from compressreid.config.validate import AT_LEAST, POSITIVE
from compressreid.errors import ConfigError


@pytest.mark.parametrize("key, lowest, meaning", AT_LEAST, ids=[key for key, _, _ in AT_LEAST])
def test_a_budget_below_its_range_is_refused_naming_key_and_range(key, lowest, meaning):
    with pytest.raises(ConfigError) as info:
        load_config("", [key, str(lowest - 1)])
    assert str(info.value) == f"{key} must be >= {lowest} ({meaning}), got {lowest - 1}"
    assert load_config("", [key, str(lowest)])  # the bound itself is allowed


@pytest.mark.parametrize("key", [key for key, _ in POSITIVE])
@pytest.mark.parametrize("value", [0.0, -0.1, float("nan"), float("inf")])
def test_a_learning_rate_must_be_finite_and_positive(tmp_path, key, value):
    nested: dict = {}
    node = nested
    *parents, name = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[name] = value
    path = tmp_path / "lr.yml"  # a file: NaN cannot be written as a command-line override
    path.write_text(yaml.safe_dump(nested))
    with pytest.raises(ConfigError, match=f"^{key} must be a finite number > 0"):
        load_config(str(path))


def test_a_config_file_with_a_bad_budget_is_refused(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("SOLVER:\n  IMS_PER_BATCH: 0\n")
    with pytest.raises(ConfigError, match=r"SOLVER.IMS_PER_BATCH must be >= 1"):
        load_config(str(path))
