"""Quantization-aware training: fake-quantize the student, fine-tune it by distillation from the FP32 teacher,
freeze BN statistics then observers on a schedule, and export the INT8 QDQ graph the fake-quant model defines.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.data.build import load_train_data
from compressreid.distill.task import build_distillation_task
from compressreid.engine.device import resolve_device
from compressreid.engine.loop import HookBase
from compressreid.engine.optim import build_optimizer
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.source_run import SourceRun, load_source_model
from compressreid.engine.trainer import fit
from compressreid.errors import ConfigError
from compressreid.export.conventions import ConventionAdapter, InputConvention
from compressreid.export.onnx_export import export_onnx
from compressreid.export.ort_model import OrtEmbedder
from compressreid.export.parity import embedding_parity
from compressreid.quant.compare import evaluate_cached, summary
from compressreid.quant.fake_quant import ActivationQuantizer, ExportConv2d, QATConv2d, qdq_translations
from compressreid.quant.format import QuantFormat

logger = logging.getLogger(__name__)


def _trace(model: nn.Module, images: torch.Tensor, handles) -> None:
    """One eval-mode forward without gradients for the given hooks, which are removed afterwards."""
    try:
        with torch.no_grad():
            model.eval()(images)
    finally:
        for handle in handles:
            handle.remove()


def conv_bn_pairs(model: nn.Module, images: torch.Tensor) -> List[Tuple[str, Optional[str]]]:
    """Every Conv2d with the BatchNorm2d that directly consumes its output (None when there is none).

    Found by tracing one forward with hooks (a BN is paired when its input *is* the conv's output tensor), so it
    follows whatever the model's forward does, not module names. A BN fed by a split (IBN's half) is not paired.
    """
    outputs: Dict[int, str] = {}
    pairs: Dict[str, Optional[str]] = {}
    keep: List[torch.Tensor] = []  # holds the traced tensors so their ids stay unique during the trace
    names = {module: name for name, module in model.named_modules()}

    def on_conv(module, inputs, output):
        keep.append(output)
        outputs[id(output)] = names[module]
        pairs.setdefault(names[module], None)

    def on_bn(module, inputs, output):
        conv = outputs.get(id(inputs[0]))
        if conv is not None and pairs.get(conv) is None:
            pairs[conv] = names[module]

    _trace(model, images, [m.register_forward_hook(on_conv if isinstance(m, nn.Conv2d) else on_bn)
                           for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))])
    return list(pairs.items())


def prepare_qat(model: nn.Module, images: torch.Tensor, fmt: QuantFormat = QuantFormat()) -> nn.Module:
    """Replace every Conv2d (+ its BatchNorm2d) in place by a QATConv2d; the BN's slot becomes an Identity.

    Args:
        fmt: the INT8 format trained and exported (activation type and symmetry, weight bits).
    """
    for conv_name, bn_name in conv_bn_pairs(model, images):
        bn = model.get_submodule(bn_name) if bn_name else None
        model.set_submodule(conv_name, QATConv2d(model.get_submodule(conv_name), bn, fmt))
        if bn_name:
            model.set_submodule(bn_name, nn.Identity())
    share_chained_quantizers(model, images)
    return model


def share_chained_quantizers(model: nn.Module, images: torch.Tensor) -> None:
    """Where a QATConv2d reads another one's output unchanged, quantize that tensor once: the reader takes the
    writer's output quantizer as its input quantizer and does not re-quantize.

    Why: two quantizers in a row (writer's output, reader's input) give the exported graph a Q->DQ->Q->DQ chain
    with two scales. ONNX Runtime's DoubleQDQPairsRemover merges such a chain into one pair with a third scale,
    so what runs is no longer what was trained: one such pair in MobileNetV3-small moved the embeddings to
    cosine 0.94 from the trained model.
    """
    writers: Dict[int, Tuple[QATConv2d, int]] = {}
    readers: Dict[QATConv2d, QATConv2d] = {}
    keep: List[torch.Tensor] = []  # holds the traced tensors so their ids stay unique during the trace

    def on_output(module, inputs, output):
        keep.append(output)
        writers[id(output)] = (module, output._version)

    def on_input(module, inputs):
        # same tensor *and* same version: an in-place op in between (ReLU(inplace=True)) bumps the version,
        # and a tensor changed after its writer's quantizer needs the reader's own
        writer, version = writers.get(id(inputs[0]), (None, -1))
        if writer is not None and inputs[0]._version == version:
            readers.setdefault(module, writer)

    convs = [m for m in model.modules() if isinstance(m, QATConv2d)]
    _trace(model, images, [m.register_forward_hook(on_output) for m in convs]
           + [m.register_forward_pre_hook(on_input) for m in convs])
    for reader, writer in readers.items():
        reader.input_quant, reader.input_prequantized = writer.output_quant, True


def quantizers(model: nn.Module) -> List[ActivationQuantizer]:
    return [m for m in model.modules() if isinstance(m, ActivationQuantizer)]


@torch.no_grad()
def calibrate_observers(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Initialise every activation range with min/max over the calibration batches (as PTQ would)."""
    model.eval()
    for q in quantizers(model):
        q.calibrating = True
    for batch in batches:
        model(batch)
    for q in quantizers(model):
        q.calibrating = False


def freeze_for_export(model: nn.Module) -> nn.Module:
    """Replace each QATConv2d by its integer ExportConv2d (in place); observers stay frozen."""
    for name, module in list(model.named_modules()):
        if isinstance(module, QATConv2d):
            model.set_submodule(name, ExportConv2d(module))
    for q in quantizers(model):
        q.observing = False
        q.frozen_for_export = True
    return model.eval()


class QATScheduleHook(HookBase):
    """Freezes BN statistics at ``freeze_bn_iter`` and activation observers at ``freeze_observer_iter``."""

    def __init__(self, model: nn.Module, freeze_bn_iter: int, freeze_observer_iter: int):
        self.model, self.freeze_bn_iter, self.freeze_observer_iter = model, freeze_bn_iter, freeze_observer_iter

    def before_step(self) -> None:
        it = self.loop.iter
        if it == self.freeze_bn_iter:
            logger.info("QAT iteration %d: BN statistics frozen", it)
        if it == self.freeze_observer_iter:
            logger.info("QAT iteration %d: activation observers frozen", it)
        for module in self.model.modules():
            if isinstance(module, QATConv2d) and module.bn is not None:
                module.bn_frozen = it >= self.freeze_bn_iter
            elif isinstance(module, ActivationQuantizer):
                module.observing = it < self.freeze_observer_iter


@dataclass
class QATOutcome:
    """The trained fake-quant model, its metrics (the reference the shipped INT8 file must reproduce), the recipe."""

    model: nn.Module
    fake_quant_metrics: Dict[str, float]
    info: Dict[str, object]


def qat_config(cfg: CfgNode, source: SourceRun, folder: str) -> CfgNode:
    """The fine-tuning recipe: QUANT.QAT's length and LR on the stage's SOLVER, teachers from DISTILL.TEACHERS
    or, when none is named, the FP32 source model itself."""
    derived = cfg.clone()
    derived.defrost()
    q = cfg.QUANT.QAT
    derived.SOLVER.BASE_LR = q.BASE_LR
    derived.SOLVER.ITERS_PER_EPOCH = q.ITERS
    derived.SOLVER.MAX_EPOCH = 1
    derived.SOLVER.WARMUP_ITERS = 0
    derived.SOLVER.FREEZE_ITERS = 0
    derived.SOLVER.CHECKPOINT_PERIOD = 10 ** 6
    derived.TEST.EVAL_PERIOD = 0
    derived.OUTPUT_DIR = folder
    if not derived.DISTILL.TEACHERS.CONFIGS:
        if not source.folder:
            raise ConfigError("QAT distils from the FP32 model: set DISTILL.TEACHERS or give QUANT.SOURCE as a run folder")
        derived.DISTILL.TEACHERS.CONFIGS = (os.path.join(source.folder, "config.yaml"),)
        derived.DISTILL.TEACHERS.WEIGHTS = (source.weights,)
    derived.freeze()
    return derived


def run_qat(cfg: CfgNode, eval_cfg: CfgNode, source: SourceRun, fmt: QuantFormat, judge,
            batches: Sequence[torch.Tensor], run: RunDirectory, progress: bool = True) -> QATOutcome:
    """Fine-tune a fake-quantized copy of the source in format ``fmt`` with distillation.

    Returns the fake-quant model and its metrics (the reference the exported INT8 model must reproduce), measured
    by ``judge`` (its evaluator and test images, fed in its target's convention through the model's own input).
    """
    q = cfg.QUANT.QAT
    if q.ITERS < 1:
        raise ConfigError(f"QUANT.QAT.ITERS is {q.ITERS}: expected >= 1 fine-tuning iterations")
    data = load_train_data(eval_cfg)
    student = load_source_model(source, num_classes=data.num_classes)
    prepare_qat(student, batches[0][:8], fmt)
    calibrate_observers(student, batches)
    folder = run.file("qat")
    derived = qat_config(cfg, source, folder)
    qat_run = RunDirectory(folder)
    os.makedirs(folder, exist_ok=True)
    device = resolve_device(cfg.MODEL.DEVICE)  # fine-tuning runs where the training recipe says (CUDA too)
    task = build_distillation_task(derived, student.to(device), data.num_classes, device)
    try:
        optimizer = build_optimizer(derived, task.named_trainable_parameters())
        logger.info("QAT: %d iterations at LR %g, BN frozen at %d, observers frozen at %d; losses %s; weights %s",
                    q.ITERS, q.BASE_LR, q.FREEZE_BN_ITER, q.FREEZE_OBSERVER_ITER, list(derived.DISTILL.LOSSES.NAME),
                    fmt.describe()["weights"])
        fit(derived, qat_run, task, optimizer, data, device=device, progress=progress,
            extra_hooks=[QATScheduleHook(student, q.FREEZE_BN_ITER, q.FREEZE_OBSERVER_ITER)])
    finally:
        task.close()
    student.cpu()  # evaluation, freezing and export run on the CPU
    for leftover in ("model_final.pth", "last_checkpoint.pth"):  # fake-quant state: not a loadable student
        if os.path.exists(qat_run.file(leftover)):
            os.remove(qat_run.file(leftover))
    # the reference is the fake-quant model as trained (before freezing to integers): what ships must match it
    adapter = ConventionAdapter(student.eval(), judge.target.convention)
    fake_quant = summary(evaluate_cached(judge.evaluator, adapter, judge.images).result)
    logger.info("QAT fake-quant model (PyTorch): %s", fake_quant)
    exported = freeze_for_export(student)
    # how far ONNX Runtime's integer kernels land from the PyTorch integer model (requantization rounding only)
    info = {"qat": {"iters": q.ITERS, "base_lr": q.BASE_LR, "freeze_bn_iter": q.FREEZE_BN_ITER,
                    "freeze_observer_iter": q.FREEZE_OBSERVER_ITER, "teachers": list(derived.DISTILL.TEACHERS.CONFIGS),
                    "losses": list(derived.DISTILL.LOSSES.NAME)},
            "calibration": {"split": "train", "images": sum(len(b) for b in batches), "method": "minmax (init)"}}
    return QATOutcome(exported, fake_quant, info)


def export_qat(exported: nn.Module, path: str, input_size: Sequence[int], opset: int,
               convention: InputConvention, check_images: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """Write the frozen QAT model (``freeze_for_export``) as the QDQ graph it defines, taking ``convention``'s input;
    with ``check_images`` (RGB 0..255), returns ONNX Runtime's agreement with the PyTorch integer model."""
    model = ConventionAdapter(exported, convention)
    export_onnx(model, path, input_size, max(opset, 18), qdq_translations())
    if check_images is None:
        return {}
    parity = embedding_parity(model, OrtEmbedder(path), convention.from_rgb255(check_images)).to_dict()
    logger.info("QAT export vs ONNX Runtime: min cosine %.5f, mean %.5f", parity["cosine_min"], parity["cosine_mean"])
    return parity
