"""Values of fast-reid's model-zoo generation (v0.x, 2020) configs, translated to the v1.x names compressreid reads.

The MODEL_ZOO checkpoints were trained from configs such as that generation's ``Base-MGN.yml``::

    BACKBONE: {DEPTH: 50}
    HEADS: {NAME: "BNneckHead", POOL_LAYER: "gempool", CLS_LAYER: "circle", IN_FEAT: 256}

fast-reid v1.x renamed every one of these values. Each translation is an explicit map (no fuzzy matching), applied
to the raw yaml before it is merged, and every value it changed is logged. A value of that generation that
compressreid cannot build (e.g. POOL_LAYER "avgmaxpool") is left as it is, so it fails with the usual error
naming the key and the supported values.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

# Old POOL_LAYER / CLS_LAYER names -> v1.x names (fast-reid v0.x meta_arch/mgn.py and heads/bnneck_head.py).
POOL_LAYERS = {
    "avgpool": "GlobalAvgPool",
    "fastavgpool": "GlobalAvgPool",
    "maxpool": "GlobalMaxPool",
    "gempool": "GeneralizedMeanPoolingP",  # learnable p, initialised at 3
    "identity": "Identity",
}
CLS_LAYERS = {
    "linear": "Linear",
    "circle": "CircleSoftmax",
    "circleSoftmax": "CircleSoftmax",
    "arcface": "ArcSoftmax",
    "arcSoftmax": "ArcSoftmax",
    "amSoftmax": "CosSoftmax",  # additive-margin softmax is CosFace
}
# That generation's head: pool (an Identity inside MGN) -> BNNeck -> classifier, i.e. v1.x's EmbeddingHead.
LEGACY_HEAD = "BNneckHead"
# Its default MODEL.HEADS.IN_FEAT, the width MGN's branches reduced to when a config did not set it.
LEGACY_IN_FEAT_DEFAULT = 2048


def _translate(section: Dict[str, Any], key: str, table: Mapping[str, str], where: str, notes: List[str]) -> None:
    value = section.get(key)
    if isinstance(value, str) and value in table:
        section[key] = table[value]
        notes.append(f"{where}.{key}: {value} -> {table[value]}")


def translate_legacy_values(data: Dict[str, Any], meta_architecture: str) -> List[str]:
    """Rewrite model-zoo generation values in the nested yaml dict ``data`` in place; returns what changed.

    Args:
        data: the raw yaml mapping (``_BASE_`` files already merged).
        meta_architecture: MODEL.META_ARCHITECTURE in effect (the file's, else the config's current one).

    MGN of that generation ran every branch through pool -> 1x1 conv to HEADS.IN_FEAT -> BN -> ReLU before its
    BNNeckHead; that is v1.x's reduction (EMBEDDING_DIM) plus REDUCTION_BN_RELU. Its Baseline used IN_FEAT only as
    the backbone's width, which v1.x derives, so there IN_FEAT stays ignored.
    """
    model = data.get("MODEL")
    if not isinstance(model, dict):
        return []
    notes: List[str] = []
    backbone = model.get("BACKBONE")
    if isinstance(backbone, dict):
        depth = backbone.get("DEPTH")
        if isinstance(depth, int) and not isinstance(depth, bool):
            backbone["DEPTH"] = f"{depth}x"
            notes.append(f"MODEL.BACKBONE.DEPTH: {depth} -> {depth}x")
    heads = model.get("HEADS")
    if not isinstance(heads, dict):
        return notes
    _translate(heads, "POOL_LAYER", POOL_LAYERS, "MODEL.HEADS", notes)
    _translate(heads, "CLS_LAYER", CLS_LAYERS, "MODEL.HEADS", notes)
    if heads.get("NAME") == LEGACY_HEAD:
        heads["NAME"] = "EmbeddingHead"
        notes.append(f"MODEL.HEADS.NAME: {LEGACY_HEAD} -> EmbeddingHead")
        if meta_architecture == "MGN":
            in_feat = heads.pop("IN_FEAT", LEGACY_IN_FEAT_DEFAULT)
            heads.update(EMBEDDING_DIM=in_feat, REDUCTION_BN_RELU=True)
            notes.append(f"MGN branch heads of that generation: MODEL.HEADS.EMBEDDING_DIM {in_feat}, "
                         "REDUCTION_BN_RELU True")
    return notes
