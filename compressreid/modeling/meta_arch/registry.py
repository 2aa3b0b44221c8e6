"""META_ARCHITECTURES registry. Contract: ``cls.from_config(cfg, num_classes) -> ReIDModel``."""

from compressreid.registry import Registry

META_ARCHITECTURES = Registry("meta-architecture")
