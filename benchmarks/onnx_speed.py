"""FP32 and INT8 latency of several tools/quantize.py run folders, measured side by side in one process.

    python benchmarks/onnx_speed.py output/q/r18q_s0_ptq_minmax output/q/r18q_s0_p0.3_int8 output/q/r18q_s0_p0.5_int8

For each folder: its student_fp32.onnx and its INT8 model (student_int8.onnx, or the .rejected one), at batch 1
(median latency) and batch 32 (throughput), same threads, in interleaved rounds so that a disturbance on the
machine hits every model alike. Ratios are against the first folder's FP32 model (e.g. the unpruned student),
together with the parameters and MACs its prune run recorded, when there is one.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Dict, List, Optional, Tuple

import onnx

from compressreid.export.latency import measure_latency
from summarize_runs import read_metrics  # benchmarks/ is the script directory, first on sys.path


def int8_file(folder: str) -> Optional[str]:
    for name in ("student_int8.onnx", "student_int8.rejected.onnx"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def input_size(path: str) -> Tuple[int, int]:
    dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return dims[2].dim_value, dims[3].dim_value


def prune_record(folder: str) -> Dict[str, float]:
    """Parameters and MACs of the source, when the source is a tools/prune.py run (its metrics.json)."""
    source = read_metrics(folder).get("source", {}).get("run", "")
    if not source or not os.path.isfile(os.path.join(source, "metrics.json")):
        return {}
    pruning = read_metrics(source).get("pruning", {})
    return {"params": pruning.get("params_after"), "macs": pruning.get("macs_after")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="tools/quantize.py OUTPUT_DIR folders; the first is the baseline")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=50, help="timed calls per model, batch and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models: List[Tuple[str, str, str]] = []
    for folder in args.folders:
        models.append((folder, "fp32", os.path.join(folder, "student_fp32.onnx")))
        if int8_file(folder):
            models.append((folder, "int8", int8_file(folder)))
    size = input_size(models[0][2])
    samples: Dict[Tuple[str, str, int], List[float]] = {}
    for _ in range(args.rounds):
        for folder, kind, path in models:
            for batch in (1, 32):
                result = measure_latency(path, size, batch, args.iters, args.threads)
                samples.setdefault((folder, kind, batch), []).append(result["ms_p50"])
    ms = {key: statistics.median(values) for key, values in samples.items()}
    base = args.folders[0]
    print(f"{args.threads} threads, input {size[0]}x{size[1]}, median of {args.rounds} rounds x {args.iters} calls")
    print("| run | model | b1 ms | b32 img/s | faster than the first FP32 (b1 / b32) | params | MACs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for folder, kind, _ in models:
        b1, b32 = ms[(folder, kind, 1)], ms[(folder, kind, 32)]
        ratio = f"{ms[(base, 'fp32', 1)] / b1:.2f}× / {ms[(base, 'fp32', 32)] / b32:.2f}×"
        record = prune_record(folder)
        params = f"{record['params'] / 1e6:.3f} M" if record.get("params") else "-"
        macs = f"{record['macs'] / 1e6:.2f} M" if record.get("macs") else "-"
        print(f"| {os.path.basename(folder.rstrip('/'))} | {kind} | {b1:.3f} | {32000 / b32:.0f} | {ratio} "
              f"| {params} | {macs} |")


if __name__ == "__main__":
    main()
