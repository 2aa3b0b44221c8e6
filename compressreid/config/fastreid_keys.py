"""Keys that fast-reid configs (v0.x to v1.x, and their OUTPUT_DIR dumps) carry but compressreid does not use.

They are ignored with one warning instead of failing, so a fast-reid yaml merges unchanged.
"""

from compressreid.errors import ConfigError

# Whole subtrees fast-reid has and compressreid does not read.
FASTREID_ONLY_PREFIXES = (
    "KD.",  # fast-reid's distiller; compressreid has its own DISTILL section
    "SOLVER.SWA.",
    "MODEL.LOSSES.FL.",
    "INPUT.CROP.",
    "INPUT.AFFINE.",
    "INPUT.RPT.",
    "TEST.PRECISE_BN.",
)

# Single keys, including older generations' names.
FASTREID_ONLY_KEYS = frozenset(
    {
        "MODEL.BACKBONE.WITH_SE",
        # ViT backbone keys of fast-reid master (build_vit_backbone)
        "MODEL.BACKBONE.SIE_COE",
        "MODEL.BACKBONE.STRIDE_SIZE",
        "MODEL.BACKBONE.DROP_PATH_RATIO",
        "MODEL.BACKBONE.DROP_RATIO",
        "MODEL.BACKBONE.ATT_DROP_RATE",
        "MODEL.BACKBONE.NORM_SPLIT",
        "MODEL.HEADS.NORM_SPLIT",
        "MODEL.HEADS.IN_FEAT",
        "MODEL.HEADS.REDUCTION_DIM",
        "MODEL.OPEN_LAYERS",
        "MODEL.QUEUE_SIZE",
        "MODEL.LOSSES.TRI.USE_COSINE_DIST",
        "MODEL.LOSSES.CIRCLE.ALPHA",
        "INPUT.DO_FLIP",
        "INPUT.FLIP_PROB",
        "INPUT.DO_PAD",
        "INPUT.PADDING_MODE",
        "INPUT.DO_LIGHTING",
        "INPUT.MAX_LIGHTING",
        "INPUT.P_LIGHTING",
        "INPUT.DO_AUTOAUG",
        "INPUT.DO_AUGMIX",
        "INPUT.REA.MEAN",
        "INPUT.RPT.ENABLED",
        "DATALOADER.SET_WEIGHT",
        "DATALOADER.PK_SAMPLER",
        "DATALOADER.NAIVE_WAY",
        "DATASETS.KWARGS",
        "SOLVER.MAX_ITER",
        "SOLVER.DELAY_ITERS",
        "SOLVER.FREEZE_FC_ITERS",
        "SOLVER.FP16_ENABLED",
        "SOLVER.AMP_ENABLED",
        "SOLVER.LOG_PERIOD",
        "SOLVER.SCHED_GAMMA",
        "TEST.ROC_ENABLED",
        "TEST.PRECISE_BN",
    }
)


def is_fastreid_only(key: str) -> bool:
    """True if ``key`` (dotted, upper case) is a fast-reid key that compressreid ignores."""
    return key in FASTREID_ONLY_KEYS or any(key.startswith(prefix) for prefix in FASTREID_ONLY_PREFIXES)

# fast-reid keys that change the model's structure: ignored only at the value that leaves the model as
# compressreid builds it, never silently at another value (a checkpoint would then load into the wrong net).
FASTREID_STRUCTURAL_DEFAULTS = {
    "MODEL.BACKBONE.WITH_SE": False,  # squeeze-excitation blocks in the ResNet
}


def check_ignorable_value(key: str, value: object, source: str) -> None:
    """Raise if the fast-reid-only ``key`` carries a value that would change the model compressreid builds.

    Raises:
        ConfigError: e.g. ``MODEL.BACKBONE.WITH_SE: True``, which compressreid does not implement.
    """
    if key in FASTREID_STRUCTURAL_DEFAULTS and value != FASTREID_STRUCTURAL_DEFAULTS[key]:
        raise ConfigError(f"fast-reid key '{key}: {value}' in {source} changes the model and compressreid does "
                          f"not support it; only {FASTREID_STRUCTURAL_DEFAULTS[key]} is accepted")
