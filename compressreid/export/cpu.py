"""The CPU kinds an INT8 model can run on, told apart by how their integer kernels accumulate u8 x s8 products,
and which kind this machine is.

Why kinds and not models: ONNX Runtime's and OpenVINO's x86 kernels without VNNI multiply u8 activations by s8
weights and add *pairs* of products in a saturating int16 (``vpmaddubsw``) before widening; VNNI/AMX
(``vpdpbusd``) and ARM's dot-product instructions accumulate straight into int32. So whether a file computes
what its Q/DQ graph says depends on that accumulation, which the kinds below name.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Dict, Tuple

# Flags read from /proc/cpuinfo and recorded on every model card.
RECORDED_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


@dataclass(frozen=True)
class CpuKind:
    """A family of CPUs whose integer kernels accumulate the same way.

    Attributes:
        name: what model cards and errors call it.
        accumulator: how pairs or runs of 8-bit products are summed (the bound in quant.saturation models it).
        metric: the bound's metric name for this accumulator (see compressreid.quant.saturation).
        limit: the largest value that accumulator holds.
    """

    name: str
    accumulator: str
    metric: str
    limit: int


INT16_MAX = 2 ** 15 - 1
INT32_MAX = 2 ** 31 - 1

X86_AVX2 = CpuKind("x86-64 AVX2 (no VNNI)", "u8 x s8 pairs in saturating int16 (vpmaddubsw)",
                   "u8s8_pair_sum_max", INT16_MAX)
X86_AVX512 = CpuKind("x86-64 AVX-512 without VNNI", "u8 x s8 pairs in saturating int16 (vpmaddubsw)",
                     "u8s8_pair_sum_max", INT16_MAX)
X86_VNNI = CpuKind("x86-64 VNNI (AVX-512 VNNI, AVX-VNNI, AMX)", "u8 x s8 runs of 4 into int32 (vpdpbusd)",
                   "dot_sum_max", INT32_MAX)
# ARMv8.0 NEON without dot product shifts u8 activations to s8 and adds s8 x s8 pairs in int16 (smull + smlal);
# with dotprod/i8mm it accumulates into int32. The stricter of the two is the kind's bound.
ARM64 = CpuKind("ARM64 (NEON, dot product or not)", "s8 x s8 pairs in int16 without dotprod, int32 with it",
                "s8s8_pair_sum_max", INT16_MAX)

CPU_KINDS: Tuple[CpuKind, ...] = (X86_AVX2, X86_AVX512, X86_VNNI, ARM64)


def cpu_flags() -> Dict[str, bool]:
    """This machine's recorded CPU flags (all False where /proc/cpuinfo is not there to read)."""
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as handle:
            present = {flag for line in handle if line.startswith(("flags", "Features"))
                       for flag in line.split(":", 1)[1].split()}
    except OSError:
        present = set()
    return {flag: flag in present for flag in RECORDED_FLAGS}


def kind_of(machine: str, flags: Dict[str, bool]) -> CpuKind:
    """The kind of a CPU from its architecture (``platform.machine()``) and flags."""
    if machine.lower() in ("aarch64", "arm64"):
        return ARM64
    if flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8"):
        return X86_VNNI
    if flags.get("avx512bw"):
        return X86_AVX512
    return X86_AVX2


def this_machine() -> Dict[str, object]:
    """What the model card records about the build machine: architecture, flags, kind, processor name."""
    flags = cpu_flags()
    return {"machine": platform.machine(), "processor": _processor_name(), "flags": flags,
            "kind": kind_of(platform.machine(), flags).name}


def this_kind() -> CpuKind:
    return kind_of(platform.machine(), cpu_flags())


def _processor_name() -> str:
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
