"""Values of older fast-reid configs, translated to the v1.x names compressreid reads.

Two generations wrote other values than fast-reid v1.x for the same keys:

- the model-zoo generation (v0.x, mid-2020; most MODEL_ZOO checkpoints), e.g. its ``Base-MGN.yml``::

      BACKBONE: {DEPTH: 50}
      HEADS: {NAME: "BNneckHead", POOL_LAYER: "gempool", CLS_LAYER: "circle", IN_FEAT: 256}

- fast-reid v1.0 (late 2020): lower-case POOL_LAYER / CLS_LAYER names, where "gempool" is GeM with a *fixed* p
  and "gempoolP" the learnable one (in v0.x "gempool" was the learnable one).

A file is read as v0.x when it shows that generation's own markers (``HEADS.NAME: BNneckHead`` or an integer
``BACKBONE.DEPTH``), else with v1.0's names. Each translation is an explicit map (no fuzzy matching), applied to
a config *file* before it is merged (command-line overrides are taken as written), and every change is logged. A
value compressreid cannot build (e.g. POOL_LAYER "avgmaxpool") is left as it is, so it fails with the usual
error naming the key and the supported values.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

# POOL_LAYER names -> v1.x names, per generation (fast-reid v0.x meta_arch/mgn.py; v1.0 heads/embedding_head.py).
POOL_LAYERS_V0 = {
    "avgpool": "GlobalAvgPool",
    "fastavgpool": "GlobalAvgPool",
    "maxpool": "GlobalMaxPool",
    "gempool": "GeneralizedMeanPoolingP",  # learnable p, initialised at 3
    "identity": "Identity",
}
POOL_LAYERS_V1_0 = {
    **POOL_LAYERS_V0,
    "gempool": "GeneralizedMeanPooling",  # p fixed at 3
    "gempoolP": "GeneralizedMeanPoolingP",
}
# CLS_LAYER names of both generations (v0.x: linear / circle / arcface; v1.0: linear / circleSoftmax / arcSoftmax
# / amSoftmax) -> v1.x names.
CLS_LAYERS = {
    "linear": "Linear",
    "circle": "CircleSoftmax",
    "circleSoftmax": "CircleSoftmax",
    "arcface": "ArcSoftmax",
    "arcSoftmax": "ArcSoftmax",
    "amSoftmax": "CosSoftmax",  # additive-margin softmax is CosFace
}
# The v0.x head: pool (an Identity inside MGN) -> BNNeck -> classifier, i.e. v1.x's EmbeddingHead.
LEGACY_HEAD = "BNneckHead"
# v0.x's default MODEL.HEADS.IN_FEAT: the width its MGN branches reduced to when a config did not set it.
LEGACY_IN_FEAT_DEFAULT = 2048


def is_model_zoo_generation(model: Mapping[str, Any]) -> bool:
    """True when the MODEL section shows the v0.x generation's own values (BNneckHead, an integer DEPTH)."""
    heads, backbone = model.get("HEADS"), model.get("BACKBONE")
    depth = backbone.get("DEPTH") if isinstance(backbone, dict) else None
    return ((isinstance(heads, dict) and heads.get("NAME") == LEGACY_HEAD)
            or (isinstance(depth, int) and not isinstance(depth, bool)))


def _translate(section: Dict[str, Any], key: str, table: Mapping[str, str], where: str, notes: List[str]) -> None:
    value = section.get(key)
    if isinstance(value, str) and value in table:
        section[key] = table[value]
        notes.append(f"{where}.{key}: {value} -> {table[value]}")


def translate_legacy_values(data: Dict[str, Any], meta_architecture: str) -> List[str]:
    """Rewrite older fast-reid values in the nested yaml dict ``data`` in place; returns what changed.

    Args:
        data: a config file's mapping (``_BASE_`` files already merged).
        meta_architecture: MODEL.META_ARCHITECTURE in effect (the file's, else the config's current one).

    v0.x MGN ran every branch through pool -> 1x1 conv to HEADS.IN_FEAT -> BN -> ReLU before its BNneckHead; that
    is v1.x's reduction (EMBEDDING_DIM) plus REDUCTION_BN_RELU. v0.x Baseline used IN_FEAT only as the backbone's
    width, which v1.x derives, so there IN_FEAT stays ignored.
    """
    model = data.get("MODEL")
    if not isinstance(model, dict):
        return []
    notes: List[str] = []
    model_zoo = is_model_zoo_generation(model)
    backbone = model.get("BACKBONE")
    if isinstance(backbone, dict):
        depth = backbone.get("DEPTH")
        if isinstance(depth, int) and not isinstance(depth, bool):
            backbone["DEPTH"] = f"{depth}x"
            notes.append(f"MODEL.BACKBONE.DEPTH: {depth} -> {depth}x")
    heads = model.get("HEADS")
    if not isinstance(heads, dict):
        if not (model_zoo and meta_architecture == "MGN"):  # v0.x MGN's branch stack exists without a HEADS section
            return notes
        heads = model["HEADS"] = {}
    _translate(heads, "POOL_LAYER", POOL_LAYERS_V0 if model_zoo else POOL_LAYERS_V1_0, "MODEL.HEADS", notes)
    _translate(heads, "CLS_LAYER", CLS_LAYERS, "MODEL.HEADS", notes)
    if model_zoo:
        if heads.get("NAME", LEGACY_HEAD) == LEGACY_HEAD:
            heads["NAME"] = "EmbeddingHead"
            notes.append(f"MODEL.HEADS.NAME: {LEGACY_HEAD} -> EmbeddingHead")
        if meta_architecture == "MGN":
            in_feat = heads.pop("IN_FEAT", LEGACY_IN_FEAT_DEFAULT)
            heads.update(EMBEDDING_DIM=in_feat, REDUCTION_BN_RELU=True)
            notes.append(f"model-zoo generation MGN branches (pool -> 1x1 conv -> BN -> ReLU): "
                         f"MODEL.HEADS.EMBEDDING_DIM {in_feat}, REDUCTION_BN_RELU True")
    return notes
