"""Device selection and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from compressreid.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a configuration error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"MODEL.DEVICE '{name}' asked for but no CUDA device is available; use 'cpu' or 'auto'")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError(f"MODEL.DEVICE '{name}' must be 'auto', 'cpu' or 'cuda[:N]'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
