"""Deployment targets of INT8 files (QUANT.TARGETS): a runtime, the CPU kinds a file holds on, its format."""

from compressreid.quant.targets import ort  # noqa: F401 - registers ort_portable, ort_vnni
from compressreid.quant.targets import openvino  # noqa: F401 - registers openvino (the package is imported lazily)
from compressreid.quant.targets import boxmot, tensorrt  # noqa: F401 - registers boxmot, tensorrt
from compressreid.quant.targets.base import ParityLimits, QuantTarget
from compressreid.quant.targets.registry import QUANT_TARGETS, build_targets, register_target

__all__ = ["QUANT_TARGETS", "ParityLimits", "QuantTarget", "build_targets", "register_target"]
