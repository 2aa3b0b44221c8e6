"""The quantization-target contract: a runtime, the CPU kinds (or devices) a shipped INT8 file must hold on, its
INT8 format and input convention, how to run the file there, and how it is certified.

A target does not quantize or judge by itself: the quantize run makes the file in the target's format, runs it
through ``judged_model`` on the query/gallery, and checks the stage's gates plus the target's own ``rules``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

from torch import nn
from yacs.config import CfgNode

from compressreid.engine.io import atomic_copy
from compressreid.errors import ConfigError
from compressreid.export.conventions import InputConvention, get_convention
from compressreid.export.cpu import CPU_KINDS, CpuKind, this_kind
from compressreid.export.ort_model import OrtEmbedder
from compressreid.quant.format import QuantFormat

STEM = "student_int8"


@dataclass(frozen=True)
class ParityLimits:
    """How close a runtime must stay to the file's own Q/DQ semantics (QUANT.RUNTIME_PARITY); ``max_fp32_gap``: how
    much further from FP32 than those semantics a re-fusing runtime may land (OpenVINO's ``parity_rules``)."""

    cosine_mean: float
    cosine_min: float
    max_fp32_gap: float


class QuantTarget:
    """One deployment target. Subclasses set the class attributes and override what differs.

    Attributes:
        name: the registered name (QUANT.TARGETS).
        runtime: "onnxruntime", "openvino" or "tensorrt".
        holds_on: the CPU kinds the file is certified for; each must be proven by the accumulation bound.
        portable: promises every CPU kind; refused with a format the bound cannot prove.
        executes_graph: whether the runtime computes the Q/DQ graph as written, up to requantization rounding
            (ONNX Runtime). A runtime that re-fuses it with its own rounding (OpenVINO) is held to the file by its
            ``parity_rules``, and rules against the model the file was trained as (QAT's ``fake_quant``) are
            checked on the file's Q/DQ semantics (compressreid.quant.judge.GRAPH_REFERENCES).
    """

    name: ClassVar[str] = ""
    runtime: ClassVar[str] = ""
    holds_on: ClassVar[Tuple[CpuKind, ...]] = ()
    portable: ClassVar[bool] = False
    executes_graph: ClassVar[bool] = True

    def __init__(self, fmt: QuantFormat, convention: InputConvention, parity: ParityLimits):
        self.fmt, self.convention, self.parity = fmt, convention, parity

    # ---- building from a config ----------------------------------------------------------------------------
    default_weight_bits: ClassVar[int] = 7

    @classmethod
    def format_from_config(cls, q: CfgNode) -> QuantFormat:
        """The target's format: its own weight bits unless QUANT.WEIGHT_BITS forces them, QUANT.ACTIVATION_TYPE."""
        bits = q.WEIGHT_BITS or cls.default_weight_bits
        return QuantFormat(q.ACTIVATION_TYPE, False, bits, q.PER_CHANNEL)

    @classmethod
    def convention_from_config(cls, q: CfgNode) -> InputConvention:
        return get_convention(q.INPUT_CONVENTION)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "QuantTarget":
        q = cfg.QUANT
        target = cls(cls.format_from_config(q), cls.convention_from_config(q),
                     ParityLimits(q.RUNTIME_PARITY.MIN_COSINE_MEAN, q.RUNTIME_PARITY.MIN_COSINE_MIN,
                                  q.RUNTIME_PARITY.MAX_FP32_GAP))
        target.check()
        return target

    def check(self) -> None:
        """Refuse, before any export, a target that cannot keep its promise with this format.

        Raises:
            ConfigError: a portable target whose weights could saturate an int16 pair sum.
        """
        if self.portable and self.fmt.weight_qmax * 2 * 255 > 2 ** 15 - 1:
            raise ConfigError(
                f"target {self.name} promises every CPU kind, but {self.fmt.weight_bits}-bit weights let u8 x s8 pair "
                f"sums reach {self.fmt.weight_qmax * 2 * 255} > 32767 on x86 without VNNI: leave QUANT.WEIGHT_BITS "
                "at 0 (7-bit weights) or use target ort_vnni for 8-bit weights")

    def check_available(self) -> None:
        """Raise ConfigError naming what to install when the runtime is missing (before any work)."""

    def check_source(self, model_cfg: Optional[CfgNode], onnx_source: str) -> None:
        """Refuse, before any export, a source model this target cannot ship (``model_cfg``: the source run's
        config, None for an ONNX source; ``onnx_source``: that file, "" otherwise)."""

    def file_metrics(self, path: str) -> Dict[str, float]:
        """Target-specific measurements of a quantized file (e.g. structural checks), judged by ``rules``."""
        return {}

    def runtime_metrics(self, runtime: nn.Module, path: str) -> Dict[str, float]:
        """Target-specific measurements of the file as ``runtime_model`` runs it here, judged by ``rules``."""
        return {}

    # ---- files -------------------------------------------------------------------------------------------
    def file_name(self, primary: bool, rejected: bool = False, precision: str = "int8") -> str:
        """``student_int8.onnx`` for the run's first target, ``student_int8.<target>.onnx`` for the others; the FP32
        model a target ships instead (QUANT.BENCHMARK.WHEN_SLOWER) ``student_fp32.<target>.onnx``, beside the run's
        FP32 source ``student_fp32.onnx`` (which may take another input convention)."""
        if precision == "fp32":
            return f"student_fp32.{self.name}.onnx"
        stem = STEM if primary else f"{STEM}.{self.name}"
        return f"{stem}{'.rejected' if rejected else ''}.onnx"

    def package(self, model_path: str, folder: str, primary: bool, accepted: bool,
                precision: str = "int8") -> List[str]:
        """Write the shipped (or rejected) files into ``folder``; returns their paths, the model first."""
        path = os.path.join(folder, self.file_name(primary, rejected=not accepted, precision=precision))
        atomic_copy(model_path, path)  # with the user's umask: the file is meant to be copied to a service
        return [path]

    def stale_files(self, folder: str, primary: bool) -> List[str]:
        """Files an earlier run of this target may have left in ``folder``."""
        return [os.path.join(folder, self.file_name(primary, r)) for r in (False, True)] + [
            os.path.join(folder, self.file_name(primary, precision="fp32"))]

    # ---- running the file ------------------------------------------------------------------------------
    def runtime_model(self, path: str, threads: int = 0) -> Optional[nn.Module]:
        """The file in the target's runtime on this machine, or None when this machine cannot run it."""
        return OrtEmbedder(path, threads)

    def runtime_note(self) -> str:
        """How the runtime model above relates to the target's runtime (the card says it)."""
        return f"{self.runtime} on this machine"

    def reference_model(self, path: str) -> nn.Module:
        """The graph's own Q/DQ semantics: every node run as written (ONNX Runtime, no graph optimisation)."""
        return OrtEmbedder(path, optimized=False)

    def judged_model(self, path: str, threads: int = 0) -> nn.Module:
        """What the gates judge: the runtime when it runs here, else the Q/DQ semantics."""
        return self.runtime_model(path, threads) or self.reference_model(path)

    # ---- certification -----------------------------------------------------------------------------------
    def rules(self, runtime_here: bool) -> List[str]:
        """The target's own gate rules, added to TEST.GATES: every claimed CPU kind's accumulation bound, and,
        when its runtime runs here, its agreement with the file's Q/DQ semantics (``parity_rules``)."""
        rules = list(dict.fromkeys(f"{kind.metric} <= {kind.limit}" for kind in self.holds_on))
        if runtime_here:
            rules += [*self.parity_rules(), f"runtime_cosine_min >= {self.parity.cosine_min}"]
        return rules

    def parity_rules(self) -> List[str]:
        """How the runtime here must agree with the file besides the cosine-min floor: for a runtime that executes
        the Q/DQ graph as written up to requantization rounding (ONNX Runtime), its cosine mean to those semantics.
        A runtime that re-fuses the graph with its own rounding overrides this (OpenVINO: no further from FP32 than
        the semantics, every integer layer run in integers)."""
        return [f"runtime_cosine_mean >= {self.parity.cosine_mean}"]

    def measured_kind(self) -> Optional[CpuKind]:
        """The CPU kind whose arithmetic ``runtime_model`` reproduces on this machine (None: it does not run here)."""
        return this_kind()

    def certification(self, bounds: Dict[str, object],
                      measured: Optional[CpuKind]) -> Dict[str, Dict[str, object]]:
        """Per CPU kind, every one the project knows (the card says where a file does *not* hold too, whatever
        machine built it): is it claimed, does the bound prove it, was it measured here."""
        out = {}
        for kind in CPU_KINDS:
            value = int(bounds.get(kind.metric, 0))
            proven = value <= kind.limit
            how = [f"proven by the bound ({kind.metric} {value} <= {kind.limit})" if proven else
                   f"not proven: {kind.metric} {value} > {kind.limit} ({kind.accumulator})"]
            if kind == measured:
                how.insert(0, f"measured here ({self.runtime_note()})")
            out[kind.name] = {"claimed": kind in self.holds_on, "holds": proven, "how": "; ".join(how)}
        return out

    def describe(self) -> Dict[str, object]:
        """The card's target fields."""
        return {"target": self.name, "runtime": self.runtime, "portable": self.portable,
                "holds_on": [k.name for k in self.holds_on], "format": self.fmt.describe()}
