"""The BoxMOT target: the portable INT8 file under a name BoxMOT resolves, fed what BoxMOT feeds every ReID model
(an ImageNet-normalised RGB crop), with the ``<file>.onnx.metadata.json`` sidecar BoxMOT >= 23 reads.

BoxMOT (AGPL) is not a dependency: its loading contract is written down here and reproduced in a test. BoxMOT <= 22
takes the architecture from a registered token in the file name (and builds that PyTorch model before running the
ONNX file, so an unknown name fails with "Unknown model"); BoxMOT >= 23 reads ``model_name`` from the sidecar first
and runs the ONNX graph at its own static input size.
"""

from __future__ import annotations

import os
from typing import ClassVar, Dict, List, Optional, Tuple

from yacs.config import CfgNode

from compressreid.engine.io import atomic_copy, atomic_write_json
from compressreid.errors import ConfigError
from compressreid.export.conventions import InputConvention, get_convention
from compressreid.export.cpu import ARM64, X86_AVX2, X86_AVX512, X86_VNNI
from compressreid.quant.targets.base import QuantTarget
from compressreid.quant.targets.registry import register_target

CONVENTION = "rgb_imagenet"  # BoxMOT: BGR crop -> cv2.resize -> RGB -> /255 -> ImageNet mean/std
# Tokens BoxMOT <= 22 matches in a file name (boxmot 10.x-22.x MODEL_TYPES); BoxMOT 25 registers more names.
TOKENS_SINCE_10 = ("resnet50", "resnet101", "mlfn", "hacnn", "mobilenetv2_x1_0", "mobilenetv2_x1_4", "osnet_x1_0",
                   "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0", "osnet_ain_x1_0", "lmbn_n")
TOKENS_25 = ("resnet18", "resnet34", "resnet152", "osnet_ain_x0_75", "osnet_ain_x0_5", "osnet_ain_x0_25")
SIDECAR_SUFFIX = ".metadata.json"


def _width_token(width: float) -> str:
    return {1.0: "x1_0", 0.75: "x0_75", 0.5: "x0_5", 0.25: "x0_25"}.get(float(width), "")


def boxmot_token(cfg: CfgNode) -> str:
    """BoxMOT's registered name for the model's architecture, or "" when BoxMOT has none."""
    b = cfg.MODEL.BACKBONE
    if cfg.MODEL.META_ARCHITECTURE != "Baseline":
        return ""
    if b.NAME == "build_resnet_backbone" and float(b.WIDTH) == 1.0:
        return f"resnet{str(b.DEPTH).rstrip('x')}"
    width = _width_token(b.WIDTH)
    if b.NAME == "osnet" and width:
        return f"osnet_ibn_{width}" if b.WITH_IBN else f"osnet_{width}"
    if b.NAME == "osnet_ain" and width:
        return f"osnet_ain_{width}"
    return ""


def architecture_name(cfg: CfgNode) -> str:
    """A descriptive name of the architecture for files BoxMOT names from the sidecar."""
    b = cfg.MODEL.BACKBONE
    name = b.TIMM_NAME if b.NAME == "timm" else b.NAME.replace("build_", "").replace("_backbone", "")
    if b.NAME == "build_resnet_backbone":
        name = f"resnet{str(b.DEPTH).rstrip('x')}{'_ibn' if b.WITH_IBN else ''}"
    return f"{cfg.MODEL.META_ARCHITECTURE.lower()}_{name}_w{float(b.WIDTH):g}".replace(".", "_")


@register_target
class BoxMOT(QuantTarget):
    name: ClassVar[str] = "boxmot"
    runtime: ClassVar[str] = "onnxruntime"  # BoxMOT's ONNX backend
    holds_on = (X86_AVX2, X86_AVX512, X86_VNNI, ARM64)
    portable: ClassVar[bool] = True

    def __init__(self, fmt, convention: InputConvention, parity, sidecar: bool = True):
        super().__init__(fmt, convention, parity)
        self.sidecar = sidecar
        self.token, self.architecture, self.input_size = "", "", (0, 0)

    @classmethod
    def convention_from_config(cls, q: CfgNode) -> InputConvention:
        return get_convention(CONVENTION)  # what BoxMOT feeds, whatever QUANT.INPUT_CONVENTION says

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "QuantTarget":
        target = super().from_config(cfg)
        target.sidecar = bool(cfg.QUANT.BOXMOT.SIDECAR)
        return target

    def check_source(self, model_cfg: Optional[CfgNode], onnx_source: str) -> None:
        """BoxMOT must be able to name the architecture: from a registered token in the file name, or (BoxMOT >= 23)
        from the sidecar."""
        if model_cfg is None:
            raise ConfigError("target boxmot needs the source run folder (to name the architecture for BoxMOT and "
                              "re-export it for BoxMOT's ImageNet-normalised input), not an ONNX file")
        self.token, self.architecture = boxmot_token(model_cfg), architecture_name(model_cfg)
        self.input_size = tuple(int(v) for v in model_cfg.INPUT.SIZE_TEST)
        if not self.token and not self.sidecar:
            raise ConfigError(f"target boxmot: BoxMOT has no registered name for {self.architecture}, so without "
                              f"the sidecar it cannot load the file; set QUANT.BOXMOT.SIDECAR True (BoxMOT >= 23 reads "
                              f"model_name from it) or use a backbone BoxMOT names ({', '.join(TOKENS_SINCE_10[:4])}, ...)")

    def file_name(self, primary: bool, rejected: bool = False, precision: str = "int8") -> str:
        stem = f"{self.token or self.architecture}_compressreid_{precision}"
        return f"{stem}{'.rejected' if rejected else ''}.onnx"

    def sidecar_payload(self, path: str, embedding_dim: int, precision: str = "int8") -> Dict[str, object]:
        """What BoxMOT >= 23 reads (schema 1: model_name, model_kwargs.img_size) plus what a person needs."""
        height, width = self.input_size
        return {"schema_version": 1, "model_name": self.token or self.architecture,
                "model_kwargs_schema_version": 1, "model_kwargs": {"img_size": [height, width]},
                "preprocess": "resize", "format": "onnx", "precision": precision, "dynamic_batch": True,
                "input_name": "images", "output_names": ["embedding"], "input_shape": [-1, 3, height, width],
                "img_size": [height, width], "embedding_dim": embedding_dim, "source": "compressreid",
                "input_convention": CONVENTION, "model_card": "model_card.json"}

    def package(self, model_path: str, folder: str, primary: bool, accepted: bool,
                precision: str = "int8") -> List[str]:
        from compressreid.export.model_card import graph_embedding_dim

        path = os.path.join(folder, self.file_name(primary, rejected=not accepted, precision=precision))
        atomic_copy(model_path, path)
        if not self.sidecar or not accepted:
            return [path]
        sidecar = path + SIDECAR_SUFFIX
        atomic_write_json(sidecar, self.sidecar_payload(path, graph_embedding_dim(path), precision))
        return [path, sidecar]

    def stale_files(self, folder: str, primary: bool) -> List[str]:
        files = super().stale_files(folder, primary)
        return files + [f + SIDECAR_SUFFIX for f in files]

    def describe(self) -> Dict[str, object]:
        height, width = self.input_size
        versions = ("BoxMOT >= 10 by its file name" if self.token in TOKENS_SINCE_10 else
                    "BoxMOT 25 by its file name" if self.token in TOKENS_25 else "BoxMOT >= 23 by its sidecar only")
        note = "" if (height, width) == (256, 128) else (
            f"; BoxMOT <= 22 always feeds 256x128 crops, this file takes {height}x{width}: use BoxMOT >= 23")
        return {**super().describe(), "boxmot": {"name": self.token or self.architecture, "resolved": versions + note,
                                                "sidecar": self.sidecar}}
