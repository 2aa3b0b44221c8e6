"""QUANT_TARGETS: the registered deployment targets, and the targets a config asks for (checked before any work)."""

from __future__ import annotations

from typing import List

from yacs.config import CfgNode

from compressreid.errors import ConfigError
from compressreid.registry import Registry

QUANT_TARGETS = Registry("quantization target")


def register_target(cls):
    """Register a QuantTarget subclass under its ``name``."""
    return QUANT_TARGETS.register(cls.name)(cls)


def build_targets(cfg: CfgNode) -> List["QuantTarget"]:  # noqa: F821 - base imports this module's registry
    """The targets of QUANT.TARGETS, in order (the first is the run's primary file), each checked and available.

    Raises:
        ConfigError: an empty list, an unknown or repeated name, a runtime that is not installed, a format the
            target's promise cannot be proven with.
    """
    from compressreid.quant import targets as _builtin  # noqa: F401 - registers the built-in targets

    names = list(cfg.QUANT.TARGETS)
    if not names:
        raise ConfigError("QUANT.TARGETS is empty: name at least one target, e.g. (\"ort_portable\",)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"QUANT.TARGETS names {', '.join(repeated)} twice")
    targets = []
    for name in names:
        if name not in QUANT_TARGETS:
            raise ConfigError(f"QUANT.TARGETS: unknown target '{name}'; valid: {', '.join(QUANT_TARGETS.names())}")
        target = QUANT_TARGETS.get(name).from_config(cfg)
        target.check_available()
        targets.append(target)
    return targets
