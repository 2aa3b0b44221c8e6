"""Where a PTQ file's error comes from: its integer weights, or the rounding of its activations.

Each model is quantized in one target's format (all-INT8, no fallback, the run's calibration settings and the
asked weight rounding), then run node by node (the file's Q/DQ semantics) four ways against its FP32 self on the
query/gallery: as quantized; with FP32 weights (and biases) in place of the integer ones; with every activation
quantizer's rounding taken out (a Clip to the quantizer's range in its place, so a ReLU folded into it and the
calibrated clipping stay); with both.

    python benchmarks/int8_error_split.py output/q14/mnv3s_s0_ptq output/q14/r18ibnq_s0_ptq --seeds 0 1 2

Prints mAP drop (FP32 - variant) and embedding cosine mean / min per variant, with the CPU kind.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from typing import Dict, List

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization.onnx_model import ONNXModel

from compressreid.export.cpu import cpu_flags, this_kind
from compressreid.export.ort_model import OrtEmbedder
from compressreid.quant.calibration import calibration_batches
from compressreid.quant.compare import evaluate_cached, quantization_parity
from compressreid.quant.ptq import WEIGHTED_OPS, calibrate, preprocess, quantize_ptq
from compressreid.quant.refine import WEIGHT_ROUNDINGS, Refinement

from _bench import load_quant_run

VARIANTS = (("as quantized", True, True), ("FP32 weights", False, True), ("activations unrounded", True, False),
            ("both", False, False))


def _has_zero_point(q: onnx.NodeProto) -> bool:
    return len(q.input) > 2 and bool(q.input[2])


def _code_range(q: onnx.NodeProto, initializers) -> tuple:
    """The integer range a QuantizeLinear writes: its zero point's type, else its output_dtype, else uint8."""
    if _has_zero_point(q):
        dtype = numpy_helper.to_array(initializers[q.input[2]]).dtype
    else:
        attribute = next((a for a in q.attribute if a.name == "output_dtype"), None)
        dtype = helper.tensor_dtype_to_np_dtype(attribute.i) if attribute is not None else np.uint8
    info = np.iinfo(dtype)
    return info.min, info.max


def variant(quantized: onnx.ModelProto, fp32: onnx.ModelProto, integer_weights: bool, rounded_activations: bool
            ) -> onnx.ModelProto:
    """A copy of ``quantized`` with FP32 weights and/or unrounded activations (module docstring)."""
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    drop, added = set(), []  # outputs of the nodes taken out; the nodes put in
    if not rounded_activations:
        for q in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in initializers]:
            lowest, highest = _code_range(q, initializers)
            scale = float(numpy_helper.to_array(initializers[q.input[1]]))
            zero = float(numpy_helper.to_array(initializers[q.input[2]])) if _has_zero_point(q) else 0.0
            bounds = [numpy_helper.from_array(np.array((v - zero) * scale, np.float32), f"{q.output[0]}_clip_{i}")
                      for i, v in enumerate((lowest, highest))]
            graph.initializer.extend(bounds)
            for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]]:
                added.append(helper.make_node("Clip", [q.input[0], bounds[0].name, bounds[1].name], [dq.output[0]]))
                drop.add(dq.output[0])
            drop.add(q.output[0])
    if not integer_weights:  # every weighted layer reading dequantized weights or biases gets its FP32 ones
        fp32_nodes = {n.name: n for n in fp32.graph.node if n.name}
        fp32_weights = {t.name: t for t in fp32.graph.initializer}
        producers = {out: n for n in graph.node for out in n.output}
        for node in [n for n in graph.node if n.op_type in WEIGHTED_OPS and n.name in fp32_nodes]:
            source = fp32_nodes[node.name]
            for index in range(1, min(len(node.input), len(source.input))):
                dq = producers.get(node.input[index])
                if dq is None or dq.op_type != "DequantizeLinear" or source.input[index] not in fp32_weights:
                    continue
                tensor = numpy_helper.from_array(numpy_helper.to_array(fp32_weights[source.input[index]]),
                                                 f"{node.name}_fp32_{index}")
                graph.initializer.append(tensor)
                node.input[index] = tensor.name
                drop.add(dq.output[0])
    nodes = [n for n in graph.node if n.output[0] not in drop] + added  # nodes by their (unique) outputs
    del graph.node[:]
    graph.node.extend(nodes)
    ONNXModel(model).topological_sort()  # the Clips where the Q/DQ pairs were
    return model


def measure(run: str, target_name: str, seeds: List[int], rounding: str, threads: int) -> List[Dict]:
    loaded = load_quant_run(run, target_name, threads)
    cfg, fmt, images, evaluator, fp32 = loaded.cfg, loaded.target.fmt, loaded.images, loaded.evaluator, loaded.fp32
    fp32_path, fp32_map = loaded.fp32_path, loaded.fp32_map
    c = cfg.QUANT.CALIBRATION
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-split-") as tmp:
        prepared = preprocess(fp32_path, os.path.join(tmp, "prepared.onnx"))
        for seed in seeds:
            batches = calibration_batches(cfg, c.NUM_IMAGES, c.BATCH_SIZE, seed)
            cache = calibrate(prepared, batches, os.path.join(tmp, f"cal{seed}.json"), c.METHOD, c.PERCENTILE,
                              c.HISTOGRAM_BINS)
            path = quantize_ptq(prepared, os.path.join(tmp, "int8.onnx"), batches, c.METHOD, fmt, c.PERCENTILE,
                                histogram_bins=c.HISTOGRAM_BINS, calibration_cache=cache,
                                refinement=replace(Refinement(), weight_rounding=rounding))
            quantized, reference = onnx.load(path), onnx.load(prepared)
            for name, integer_weights, rounded_activations in VARIANTS:
                file = os.path.join(tmp, "variant.onnx")
                onnx.save(variant(quantized, reference, integer_weights, rounded_activations), file)
                got = evaluate_cached(evaluator, OrtEmbedder(file, threads=threads, optimized=False), images)
                parity = quantization_parity(fp32, got, cfg.TEST.METRIC)
                rows.append({"run": os.path.basename(os.path.normpath(run)), "seed": seed, "variant": name,
                             "mAP_drop": fp32_map - float(got.result.metrics["mAP"]),
                             "cosine_mean": parity["cosine_mean"], "cosine_min": parity["cosine_min"]})
                print(f"{rows[-1]['run']} seed {seed} {name:22s}: mAP drop {rows[-1]['mAP_drop']:+.2f}, cosine "
                      f"{parity['cosine_mean']:.4f} / {parity['cosine_min']:.4f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="tools/quantize.py run folders (config.yaml, student_fp32.onnx)")
    parser.add_argument("--target", default="ort_portable", help="whose format (default: ort_portable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="calibration samples (SEED)")
    parser.add_argument("--rounding", default="auto", choices=WEIGHT_ROUNDINGS, help="QUANT.WEIGHT_ROUNDING")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    flags = cpu_flags()
    print(f"CPU: {this_kind().name} ({', '.join(k for k, v in flags.items() if v) or 'no listed features'})")
    rows = [row for run in args.runs for row in measure(run, args.target, args.seeds, args.rounding, args.threads)]
    print("\n| run | variant | mAP drop, mean (per seed) | cosine mean | cosine min (worst) |")
    print("| --- | --- | --- | --- | --- |")
    for run in dict.fromkeys(r["run"] for r in rows):
        for name, _, _ in VARIANTS:
            got = [r for r in rows if r["run"] == run and r["variant"] == name]
            drops = " / ".join(f"{r['mAP_drop']:+.2f}" for r in got)
            print(f"| {run} | {name} | {np.mean([r['mAP_drop'] for r in got]):+.2f} ({drops}) | "
                  f"{np.mean([r['cosine_mean'] for r in got]):.4f} | {min(r['cosine_min'] for r in got):.4f} |")


if __name__ == "__main__":
    main()
