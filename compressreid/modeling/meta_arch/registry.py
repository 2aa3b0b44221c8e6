"""META_ARCHITECTURES registry. Contract: ``cls.from_config(cfg, num_classes, pretrained=False) -> ReIDModel``;
``pretrained`` asks for the backbone's ImageNet initialisation from MODEL.BACKBONE.PRETRAIN_PATH (training only)."""

from compressreid.registry import Registry

META_ARCHITECTURES = Registry("meta-architecture")
