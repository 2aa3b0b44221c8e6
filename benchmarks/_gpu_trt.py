"""The TensorRT step of benchmarks/gpu_check.py: the tensorrt-target INT8 file built into an engine, its embeddings
against the FP32 ONNX model's, its mAP on the synthetic test set, and its latency at batch 1 and 32 against the
FP32 teacher built as an FP16 engine.

Written to TensorRT 10's Python API (also valid in 11 except the precision flags): a strongly typed network for the
Q/DQ file (the Q/DQ nodes set INT8, no precision flags), an optimisation profile on ``images`` with batches
(1, 16, 32), ``execute_async_v3`` on a non-default torch CUDA stream with torch tensors' addresses. ``tensorrt`` is
imported inside the step only.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from _gpu_runner import OK, StepResult, Steps, run_metrics
from _gpu_steps import CheckContext, ptq_for_tensorrt
from compressreid.config import load_config
from compressreid.data.build import load_test_sets
from compressreid.engine.source_run import load_source_model, resolve_source
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from compressreid.export.ort_model import OrtEmbedder
from compressreid.quant.compare import evaluate_cached, load_test_images, quantization_parity
from compressreid.quant.targets.tensorrt import PROFILE_BATCHES  # (min, opt, max): what the model card recommends

LATENCY_BATCHES = (1, 32)
WORKSPACE_BYTES = 1 << 30


def major_version(trt) -> int:
    return int(trt.__version__.split(".")[0])


def torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]


def build_engine(trt, onnx_path: str, chw: Sequence[int], fp16_flag: bool = False) -> Tuple[object, Dict[str, object]]:
    """Parse ``onnx_path`` and build an engine with the (1, 16, 32) batch profile.

    Args:
        fp16_flag: a weakly typed network with BuilderFlag.FP16 (TensorRT < 11 only); otherwise strongly typed,
            where every tensor keeps the ONNX graph's type (INT8 from Q/DQ nodes, FP16 from an FP16 graph).

    Returns:
        (engine, facts): the deserialized engine and how it was built (seconds, plan bytes, network typing).
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # the flag's value changed between major versions (1 in 10.x, 0 in 11.x): never a literal
    flags = 0 if fp16_flag else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser refused {os.path.basename(onnx_path)}: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *[(b, *chw) for b in PROFILE_BATCHES])
    config.add_optimization_profile(profile)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build {os.path.basename(onnx_path)} (its log above says why)")
    seconds = time.perf_counter() - start
    data = bytes(plan)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    facts = {"build_seconds": round(seconds, 2), "plan_bytes": len(data),
             "network": "weakly typed + BuilderFlag.FP16" if fp16_flag else "strongly typed"}
    return (engine, runtime), facts


class TrtEmbedder(nn.Module):
    """An engine as an embedding module: float32 [B, 3, H, W] RGB 0..255 on the CPU in, float32 [B, D] out, run
    in chunks of the profile's largest batch on its own CUDA stream."""

    def __init__(self, trt, built: Tuple[object, object]):
        super().__init__()
        self.engine, self._runtime = built  # the runtime must outlive its engine
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in names:
            raise RuntimeError(f"engine tensors {names}: expected input {INPUT_NAME} and output {OUTPUT_NAME}")
        self.in_dtype = torch_dtype(trt, self.engine.get_tensor_dtype(INPUT_NAME))
        self.out_dtype = torch_dtype(trt, self.engine.get_tensor_dtype(OUTPUT_NAME))
        self.max_batch = int(self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0])
        self.stream = torch.cuda.Stream()  # execute_async_v3 on the default stream adds device synchronisations
        self._bound: Tuple[torch.Tensor, torch.Tensor] = ()

    def bind(self, images: torch.Tensor) -> torch.Tensor:
        """Set the input shape and both addresses for ``images`` (on the GPU, in the engine's input type); returns
        the output tensor the next ``execute`` fills."""
        self.context.set_input_shape(INPUT_NAME, tuple(images.shape))
        with torch.cuda.stream(self.stream):
            out = torch.empty(tuple(self.context.get_tensor_shape(OUTPUT_NAME)), dtype=self.out_dtype, device="cuda")
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        self._bound = (images, out)  # both stay alive while the engine may read or write them
        return out

    def execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("execute_async_v3 failed")
        self.stream.synchronize()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = []
        for chunk in images.split(self.max_batch):
            with torch.cuda.stream(self.stream):  # the copy is ordered before the engine on the same stream
                x = chunk.to("cuda", self.in_dtype).contiguous()
            out = self.bind(x)
            self.execute()
            feats.append(out.float().cpu())
        return torch.cat(feats)


def measure_latency(embedder: TrtEmbedder, chw: Sequence[int], batch: int, iters: int = 50,
                    warmup: int = 10) -> Dict[str, float]:
    """Milliseconds per engine call at ``batch`` (input already on the GPU, output left there): median, mean, min."""
    with torch.cuda.stream(embedder.stream):
        images = (torch.rand(batch, *chw, device="cuda") * 255).to(embedder.in_dtype)
    embedder.bind(images)
    embedder.stream.synchronize()
    for _ in range(warmup):
        embedder.execute()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        embedder.execute()
        samples.append((time.perf_counter() - start) * 1000.0)
    p50 = statistics.median(samples)
    return {"batch": batch, "ms_p50": round(p50, 4), "ms_mean": round(statistics.fmean(samples), 4),
            "ms_min": round(min(samples), 4), "images_per_second": round(batch * 1000.0 / p50, 1)}


class Fp16Graph(nn.Module):
    """A model in half precision between a float32 input and output. Exported, every layer of the graph is FP16,
    which a strongly typed network runs in FP16 (TensorRT 11 has no FP16 flag)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).half()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.half()).float()


def teacher_fp16_engine(trt, teacher: nn.Module, folder: str, input_size: Sequence[int]):
    """The FP32 teacher as an FP16 engine: TensorRT < 11 builds its FP32 ONNX weakly typed with BuilderFlag.FP16;
    from 11 on (strong typing only) an FP16 export of it, strongly typed. Returns (built, facts)."""
    chw = (3, int(input_size[0]), int(input_size[1]))
    fp32_path = export_onnx(teacher, os.path.join(folder, "teacher_fp32.onnx"), input_size)
    if major_version(trt) < 11:
        built, facts = build_engine(trt, fp32_path, chw, fp16_flag=True)
        facts["fp16_mode"] = "teacher FP32 ONNX, weakly typed network + BuilderFlag.FP16 (TensorRT < 11)"
    else:
        fp16_path = export_onnx(Fp16Graph(teacher), os.path.join(folder, "teacher_fp16.onnx"), input_size)
        built, facts = build_engine(trt, fp16_path, chw)
        facts["fp16_mode"] = "teacher exported as an FP16 graph, strongly typed network (TensorRT >= 11)"
    return built, facts


def _find_int8(folder: str, result: StepResult) -> str:
    for name in ("student_int8.onnx", "student_int8.rejected.onnx"):
        if os.path.isfile(os.path.join(folder, name)):
            if "rejected" in name:
                result.notes.append(f"{name}: the INT8 file failed its gates; built anyway")
            return os.path.join(folder, name)
    return ""


def int8_file(ctx: CheckContext, steps: Steps, result: StepResult) -> Tuple[str, str]:
    """The tensorrt-target INT8 file and its quantize run folder: the QAT step's (even a rejected one), else a PTQ
    run of the distilled student made here."""
    folder = ctx.folder("qat")
    path = _find_int8(folder, result)
    if not path:
        steps.need("distill")
        result.notes.append(f"no QAT file (step qat {steps.status('qat') or 'did not run'}): built a PTQ "
                            "tensorrt-target file instead")
        folder = ptq_for_tensorrt(ctx)
        path = _find_int8(folder, result)
    if not path:
        raise RuntimeError(f"no student_int8.onnx in {folder}")
    return path, folder


def fp32_file(folder: str, cfg, work: str) -> str:
    """The FP32 ONNX model the INT8 file was judged against (kept by the quantize run, else exported here)."""
    path = os.path.join(folder, "student_fp32.onnx")
    if os.path.isfile(path):
        return path
    student = load_source_model(resolve_source(cfg.QUANT.SOURCE, cfg, "QUANT.SOURCE", require_accepted=False))
    return export_onnx(student.eval(), os.path.join(work, "student_fp32.onnx"), cfg.INPUT.SIZE_TEST)


def tensorrt_step(ctx: CheckContext, steps: Steps, result: StepResult) -> None:
    """INT8 engine: cosine to FP32 ONNX, mAP, latency; the teacher's FP16 engine: mAP, latency; the speed-ups.
    Numbers land in ``result`` as soon as they exist, so a later failure keeps them."""
    import tensorrt as trt  # gpu_check.py skips the step before importing this module when it is missing

    m = result.metrics
    m["tensorrt_version"] = trt.__version__
    int8_path, folder = int8_file(ctx, steps, result)
    work = ctx.folder("tensorrt")
    os.makedirs(work, exist_ok=True)
    cfg = load_config(os.path.join(folder, "config.yaml"))
    images = load_test_images(cfg, load_test_sets(cfg)[0])
    evaluator = ReIDEvaluator.from_config(cfg)
    m.update({"int8_file": int8_path, "images": len(images.q_images) + len(images.g_images)})
    _student_int8(trt, int8_path, folder, cfg, (evaluator, images), work, m)
    if steps.status("teacher_amp") != OK:
        result.notes.append("no teacher run (step teacher_amp did not pass): FP16 teacher not measured")
        return
    _teacher_fp16(trt, ctx.folder("teacher"), (evaluator, images), work, m)


def _student_int8(trt, int8_path: str, folder: str, cfg, judge, work: str, m: Dict[str, object]) -> None:
    evaluator, images = judge
    chw = (3, int(cfg.INPUT.SIZE_TEST[0]), int(cfg.INPUT.SIZE_TEST[1]))
    m["input_chw"] = list(chw)
    fp32 = evaluate_cached(evaluator, OrtEmbedder(fp32_file(folder, cfg, work)), images)
    built, m["int8_engine"] = build_engine(trt, int8_path, chw)
    engine = TrtEmbedder(trt, built)
    int8 = evaluate_cached(evaluator, engine, images, batch_size=engine.max_batch)
    m.update({"trt_int8_mAP": round(float(int8.result.metrics["mAP"]), 4),
              "fp32_onnx_mAP": round(float(fp32.result.metrics["mAP"]), 4),
              **{k: round(v, 5) for k, v in quantization_parity(fp32, int8).items()}})
    qdq = run_metrics(folder)
    if isinstance(qdq.get("mAP"), (int, float)):
        m["qdq_int8_mAP"] = round(float(qdq["mAP"]), 4)  # the same file judged on its Q/DQ semantics (ORT, CPU)
    m["latency_ms"] = {f"student_int8_b{b}": measure_latency(engine, chw, b)["ms_p50"] for b in LATENCY_BATCHES}


def _teacher_fp16(trt, teacher_folder: str, judge, work: str, m: Dict[str, object]) -> None:
    evaluator, images = judge
    cfg = load_config(os.path.join(teacher_folder, "config.yaml"))
    teacher = load_source_model(resolve_source(teacher_folder, cfg, "teacher", require_accepted=False))
    chw = (3, int(cfg.INPUT.SIZE_TEST[0]), int(cfg.INPUT.SIZE_TEST[1]))
    built, m["teacher_fp16_engine"] = teacher_fp16_engine(trt, teacher.eval(), work, cfg.INPUT.SIZE_TEST)
    engine = TrtEmbedder(trt, built)
    m["teacher_fp16_mAP"] = round(float(evaluate_cached(evaluator, engine, images,
                                                        engine.max_batch).result.metrics["mAP"]), 4)
    latency = m["latency_ms"]
    for b in LATENCY_BATCHES:
        latency[f"teacher_fp16_b{b}"] = measure_latency(engine, chw, b)["ms_p50"]
        m[f"speedup_b{b}"] = round(latency[f"teacher_fp16_b{b}"] / latency[f"student_int8_b{b}"], 3)
