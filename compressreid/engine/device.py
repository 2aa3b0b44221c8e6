"""Device selection, seeding and the autocast context of a training step."""

from __future__ import annotations

import contextlib
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
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: bool = False, bf16_cpu: bool = False) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA when ``amp`` (SOLVER.AMP.ENABLED), bf16 on CPU when ``bf16_cpu`` (SOLVER.BF16_CPU).

    Losses run inside it too: autocast keeps softmax, log and norm ops in float32 by its own op lists.
    """
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cpu" and bf16_cpu:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
