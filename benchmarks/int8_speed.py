"""INT8 student vs FP32 student vs FP32 teacher, side by side in one process, same threads, this machine.

    python benchmarks/int8_speed.py                                    # R18-IBN student vs R50-IBN teacher, 256x128
    python benchmarks/int8_speed.py --student-config configs/synthetic/student_osnet_x0_25.yml --size 64 32
    python benchmarks/int8_speed.py --int8 output/synthetic/quant_r18/student_int8.onnx \
        --fp32 output/synthetic/quant_r18/student_fp32.onnx --teacher-config configs/synthetic/bot_r50_ibn.yml

Latency does not depend on the weights, so without --int8/--fp32 the models are built from their configs with
random weights, exported, and quantized exactly as tools/quantize.py does (calibration on random images: only
the speed is measured here). Prints latency at batch 1, throughput at batch 32, sizes, ratios, the INT8
matrix-multiply peak of this CPU and the share of it the INT8 student reaches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from compressreid.config import load_config
from compressreid.export.latency import measure_latency, measure_torch_latency
from compressreid.export.onnx_export import example_images, export_onnx
from compressreid.export.ort_model import ort_session
from compressreid.modeling import build_model
from compressreid.quant.format import QuantFormat
from compressreid.quant.ptq import preprocess, quantize_ptq


def int8_matmul_peak(threads: int, n: int = 1024, iters: int = 10) -> float:
    """Measured GOPS (2 ops per multiply-add) of ONNX Runtime's MatMulInteger (u8 x s8) on n x n x n."""
    node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
    graph = helper.make_graph([node], "peak", [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
                              [helper.make_tensor("b", TensorProto.INT8, [n, n],
                                                  np.random.default_rng(0).integers(-128, 128, (n, n), dtype=np.int8).tobytes(),
                                                  raw=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "peak.onnx")
        onnx.save(model, path)
        session = ort_session(path, threads)
        a = np.random.default_rng(1).integers(0, 256, (n, n), dtype=np.uint8)
        session.run(None, {"a": a})
        start = time.perf_counter()
        for _ in range(iters):
            session.run(None, {"a": a})
        seconds = (time.perf_counter() - start) / iters
    return 2.0 * n ** 3 / seconds / 1e9


def macs(model: torch.nn.Module, size) -> int:
    import torch_pruning as tp

    ops, _ = tp.utils.count_ops_and_params(model.eval(), example_images(size, 1))
    return int(ops)


def build(config: str, size, weights: str = "") -> torch.nn.Module:
    cfg = load_config(config, ["INPUT.SIZE_TEST", repr(list(size))])
    model = build_model(cfg).eval()
    if weights:
        from compressreid.checkpoint import load_checkpoint
        load_checkpoint(model, weights)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student-config", default="configs/synthetic/student_r18_ibn.yml")
    parser.add_argument("--student-width", type=float, default=1.0, help="MODEL.BACKBONE.WIDTH of the student")
    parser.add_argument("--teacher-config", default="configs/Market1501/bagtricks_R50-ibn.yml")
    parser.add_argument("--teacher-weights", default="")
    parser.add_argument("--int8", default="", help="a shipped INT8 student (skips building and quantizing)")
    parser.add_argument("--fp32", default="", help="its FP32 ONNX source (with --int8)")
    parser.add_argument("--activation-type", default="uint8", choices=("uint8", "int8"))
    parser.add_argument("--weight-bits", type=int, default=7, choices=(7, 8),
                        help="7: the portable target's weights (default); 8: the ort_vnni target's")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    size = args.size
    results = {"size": size, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        student = None
        if args.int8:
            int8_path, fp32_path = args.int8, args.fp32
        else:
            student = build(args.student_config, size)
            if args.student_width != 1.0:
                cfg = load_config(args.student_config, ["INPUT.SIZE_TEST", repr(list(size)), "MODEL.BACKBONE.WIDTH",
                                                        str(args.student_width), "MODEL.BACKBONE.FEAT_DIM",
                                                        str(int(512 * args.student_width))])
                student = build_model(cfg).eval()
            fp32_path = export_onnx(student, os.path.join(tmp, "student_fp32.onnx"), size)
            prepared = preprocess(fp32_path, os.path.join(tmp, "prepared.onnx"))
            calib = [example_images(size, 8, seed) for seed in range(4)]
            int8_path = quantize_ptq(prepared, os.path.join(tmp, "student_int8.onnx"), calib,
                                     fmt=QuantFormat(args.activation_type, weight_bits=args.weight_bits))
        teacher = build(args.teacher_config, size, args.teacher_weights)
        teacher_path = export_onnx(teacher, os.path.join(tmp, "teacher_fp32.onnx"), size)
        rows = {"student INT8 (ORT)": int8_path, "student FP32 (ORT)": fp32_path, "teacher FP32 (ORT)": teacher_path}
        for name, path in rows.items():
            results[name] = {"batch1": measure_latency(path, size, 1, args.iters, args.threads),
                             "batch32": measure_latency(path, size, 32, max(3, args.iters // 5), args.threads),
                             "size_mb": round(os.path.getsize(path) / 2 ** 20, 2)}
        results["teacher FP32 (PyTorch eager)"] = {
            "batch1": measure_torch_latency(teacher, size, 1, args.iters, args.threads),
            "batch32": measure_torch_latency(teacher, size, 32, max(3, args.iters // 5), args.threads)}
    peak = int8_matmul_peak(args.threads)
    results["int8_matmul_peak_gops"] = round(peak, 1)
    if student is not None:
        student_macs = macs(student, size)
        ms = results["student INT8 (ORT)"]["batch32"]["ms_p50"]
        achieved = 2.0 * student_macs * 32 / (ms / 1000.0) / 1e9
        results["student_gmacs"] = round(student_macs / 1e9, 3)
        results["student_int8_achieved_gops"] = round(achieved, 1)
        results["student_int8_share_of_peak"] = round(achieved / peak, 3)
    base = results["student INT8 (ORT)"]
    print(f"input {size[0]}x{size[1]}, {args.threads} threads")
    print(f"{'model':30s} {'b1 ms':>8s} {'b32 img/s':>10s} {'size MB':>8s} {'b1 ratio':>9s} {'b32 ratio':>9s}")
    for name in ("student INT8 (ORT)", "student FP32 (ORT)", "teacher FP32 (ORT)", "teacher FP32 (PyTorch eager)"):
        r = results[name]
        ratio1 = r["batch1"]["ms_p50"] / base["batch1"]["ms_p50"]
        ratio32 = r["batch32"]["ms_p50"] / base["batch32"]["ms_p50"]
        print(f"{name:30s} {r['batch1']['ms_p50']:8.2f} {r['batch32']['images_per_second']:10.1f} "
              f"{r.get('size_mb', float('nan')):8.2f} {ratio1:8.2f}x {ratio32:8.2f}x")
    print(f"INT8 matmul peak (MatMulInteger 1024^3): {peak:.1f} GOPS")
    if "student_int8_share_of_peak" in results:
        print(f"student INT8: {results['student_gmacs']} GMACs/image, {results['student_int8_achieved_gops']} GOPS "
              f"at batch 32 = {100 * results['student_int8_share_of_peak']:.1f}% of the peak")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    sys.exit(main())
