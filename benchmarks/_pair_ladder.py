"""The student ladder of benchmarks/pair_selection.py: entries named ``<arch>_w<width>[_p<ratio>]``, their config
overrides at deployment size and at the synthetic benchmark's scale, and their models (random weights, pruned the
way tools/prune.py prunes) for timing and MAC counts.

Scaling: the deployment pair runs at 256x128 with the full-width R50-IBN teacher; the synthetic benchmark trains at
64x32 with the teacher at WIDTH 0.25. An entry of width w runs at w x SCALE there, so the student/teacher MAC ratio
stays the deployment pair's (both sides shrink by the same factor; ``mac_ratios`` measures how close it stays).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from compressreid.config import load_config
from compressreid.errors import ConfigError
from compressreid.modeling import build_model
from compressreid.prune.adapter import count_macs_params, prune_step
from compressreid.prune.importance import PRUNING_IMPORTANCES

DEPLOY_SIZE = (256, 128)
SYNTHETIC_SIZE = (64, 32)
SYNTHETIC_SCALE = 0.25  # width factor of the synthetic benchmark's models (the teacher is bot_r50_ibn.yml, WIDTH 0.25)
STUDENT_BASE = "configs/synthetic/bot_r18.yml"  # the students' shared recipe; MODEL.BACKBONE.* come from the entry
TEACHER_DEPLOY = "configs/Market1501/bagtricks_R50-ibn.yml"
TEACHER_SYNTHETIC = "configs/synthetic/bot_r50_ibn.yml"
PRUNE_ROUND_TO = 8  # at deployment width; scaled with the width (2 at the synthetic scale)

# arch -> (MODEL.BACKBONE overrides, training overrides). MobileNetV3 needs SGD 0.01 from scratch (README:
# 0.05 stalls at chance); the others use the shared recipe's rate.
ARCHS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "r18": (("NAME", "build_resnet_backbone", "DEPTH", "18x", "WITH_IBN", "False", "LAST_STRIDE", "1"), ()),
    "r18ibn": (("NAME", "build_resnet_backbone", "DEPTH", "18x", "WITH_IBN", "True", "LAST_STRIDE", "1"), ()),
    "r34": (("NAME", "build_resnet_backbone", "DEPTH", "34x", "WITH_IBN", "False", "LAST_STRIDE", "1"), ()),
    "r34ibn": (("NAME", "build_resnet_backbone", "DEPTH", "34x", "WITH_IBN", "True", "LAST_STRIDE", "1"), ()),
    "osnet": (("NAME", "osnet", "WITH_IBN", "False"), ()),
    "osnetibn": (("NAME", "osnet", "WITH_IBN", "True"), ()),
    "mnv3s": (("NAME", "mobilenetv3_small", "LAST_STRIDE", "1"), ("SOLVER.BASE_LR", "0.01")),
    "mnv3l": (("NAME", "mobilenetv3_large", "LAST_STRIDE", "1"), ("SOLVER.BASE_LR", "0.01")),
}
_NAME = re.compile(r"^(?P<arch>[a-z0-9]+)_w(?P<width>\d+(?:\.\d+)?)(?:_p(?P<prune>0?\.\d+))?$")

# Widths at deployment size; ResNet-18(-IBN) brackets the 10x point (docs/results/speed.md: R18-IBN 0.75 ~10.9x, 0.5
# ~19x at b32 in ORT), OSNet and MobileNetV3 are the depthwise alternatives, one pruned variant of the full-width
# R18-IBN (pruned widths keep ImageNet-initialisable layer names, which matters on real data).
DEFAULT_LADDER = ("r18_w1.0", "r18_w0.75", "r18_w0.625", "r18_w0.5", "r18ibn_w1.0", "r18ibn_w0.75", "r18ibn_w0.625",
                  "r18ibn_w0.5", "r18ibn_w1.0_p0.5", "osnet_w1.0", "mnv3l_w1.0", "mnv3s_w1.0")


@dataclass(frozen=True)
class Entry:
    """One student of the ladder.

    Attributes:
        name: ``<arch>_w<width>[_p<ratio>]``, e.g. ``r18ibn_w0.5``, ``r18ibn_w1.0_p0.5``.
        arch: a key of ARCHS.
        width: MODEL.BACKBONE.WIDTH at deployment size.
        prune: fraction of the MACs removed by structured pruning after distillation (0: not pruned).
    """

    name: str
    arch: str
    width: float
    prune: float = 0.0

    @property
    def base(self) -> "Entry":
        """The unpruned entry this one is pruned from (itself when not pruned)."""
        return replace(self, name=self.name.split("_p")[0], prune=0.0) if self.prune else self

    def model_opts(self, scale: float = 1.0) -> List[str]:
        """MODEL.BACKBONE overrides at ``scale`` x the deployment width (FEAT_DIM: the backbone's real output)."""
        backbone, _ = ARCHS[self.arch]
        opts = [f"MODEL.BACKBONE.{k}" if i % 2 == 0 else k for i, k in enumerate(backbone)]
        opts += ["MODEL.BACKBONE.WIDTH", _number(self.width * scale)]
        return opts + ["MODEL.BACKBONE.FEAT_DIM", str(feature_dim(tuple(opts)))]

    def train_opts(self) -> List[str]:
        return list(ARCHS[self.arch][1])

    def round_to(self, scale: float = 1.0) -> int:
        return max(1, int(round(PRUNE_ROUND_TO * scale)))


def _number(value: float) -> str:
    return f"{value:.6g}"


def parse_entry(name: str) -> Entry:
    """An Entry from its name.

    Raises:
        ConfigError: a name outside the grammar or an unknown arch (valid ones listed).
    """
    match = _NAME.match(name)
    if not match or match["arch"] not in ARCHS:
        raise ConfigError(f"ladder entry '{name}' is not <arch>_w<width>[_p<ratio>] with arch one of "
                          f"{', '.join(ARCHS)} (e.g. r18ibn_w0.5, r18ibn_w1.0_p0.5)")
    return Entry(name, match["arch"], float(match["width"]), float(match["prune"] or 0.0))


@lru_cache(maxsize=None)
def feature_dim(opts: Tuple[str, ...]) -> int:
    """The backbone's output channels for these overrides (what MODEL.BACKBONE.FEAT_DIM documents)."""
    cfg = load_config(STUDENT_BASE, ["INPUT.SIZE_TEST", "[32, 16]", *opts])
    return int(build_model(cfg).backbone.out_channels)


@torch.no_grad()
def warm_bn(model: nn.Module, size: Sequence[int], batches: int = 2) -> nn.Module:
    """BN running statistics averaged over random images, so activation ranges look trained (see
    benchmarks/_bench.py:warm_bn_statistics); returns the model in eval mode."""
    from compressreid.export.onnx_export import example_images

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    for seed in range(batches):
        model(example_images(size, 8, seed=1000 + seed))
    return model.eval()


def build_student(entry: Entry, size: Sequence[int], scale: float = 1.0, warm: bool = True) -> nn.Module:
    """The entry's model at ``size`` and ``scale`` x its width, random weights (seeded), pruned like tools/prune.py
    with per-layer ratios (GLOBAL False: the kept widths do not depend on the weights), BN warmed unless not."""
    torch.manual_seed(0)
    cfg = load_config(STUDENT_BASE, ["INPUT.SIZE_TEST", repr(list(size)), *entry.model_opts(scale)])
    model = build_model(cfg).eval()
    if entry.prune:
        prune_random(model, size, entry.prune, entry.round_to(scale))
    return warm_bn(model, size) if warm else model


def prune_random(model: nn.Module, size: Sequence[int], ratio: float, round_to: int) -> nn.Module:
    """Remove ``ratio`` of the MACs in one step with L2 importance per layer (the structure tools/prune.py
    reaches with PRUNE.GLOBAL False; its two steps land on the same per-layer widths up to rounding)."""
    before = count_macs_params(model, size)["macs"]
    prune_step(model, list(size), PRUNING_IMPORTANCES.get("l2").build(), "macs", before * (1 - ratio), round_to)
    return model


def build_teacher(config: str, size: Sequence[int], opts: Sequence[str] = (), warm: bool = True) -> nn.Module:
    """The teacher's architecture at ``size`` with random weights (no pretrained file is read)."""
    torch.manual_seed(0)
    cfg = load_config(config, ["INPUT.SIZE_TEST", repr(list(size)), "MODEL.BACKBONE.PRETRAIN", "False", *opts])
    model = build_model(cfg).eval()
    return warm_bn(model, size) if warm else model


def mac_ratios(entry: Entry) -> Dict[str, float]:
    """Student and teacher MACs at deployment size (full widths) and at the synthetic scale, and both ratios."""
    out: Dict[str, float] = {}
    for label, size, scale, teacher in (("deploy", DEPLOY_SIZE, 1.0, TEACHER_DEPLOY),
                                        ("synthetic", SYNTHETIC_SIZE, SYNTHETIC_SCALE, TEACHER_SYNTHETIC)):
        student = count_macs_params(build_student(entry, size, scale, warm=False), size)
        teacher_macs = teacher_counts(teacher, tuple(size))["macs"]
        out[f"{label}_student_macs"] = float(student["macs"])
        out[f"{label}_student_params"] = float(student["params"])
        out[f"{label}_teacher_macs"] = float(teacher_macs)
        out[f"{label}_mac_ratio"] = student["macs"] / teacher_macs
    return out


@lru_cache(maxsize=None)
def teacher_counts(config: str, size: Tuple[int, int]) -> Dict[str, int]:
    return count_macs_params(build_teacher(config, size, warm=False), size)
