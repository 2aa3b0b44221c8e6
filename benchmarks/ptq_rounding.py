"""PTQ weight rounding and bias correction, measured: each trained model quantized in one target's format with
every refinement (compressreid.quant.refine) and calibration method over several calibration samples, all-INT8
(no fallback), each file judged in its target's runtime (as tools/quantize.py judges it) on the model's
query/gallery against its FP32 self.

    python benchmarks/ptq_rounding.py output/q8/r18q_s0_ptq output/q8/demo_ptq --seeds 0 1 2
    python benchmarks/ptq_rounding.py output/q8/r18ibnq_s0_ptq --target tensorrt --methods minmax percentile \
        --refinements nearest

Each argument is a tools/quantize.py run folder (its config.yaml and student_fp32.onnx are read: same FP32 graph,
same calibration settings, same evaluator). Prints mAP drop (FP32 - INT8) and embedding cosine mean/min per seed, then
mean +- standard deviation over seeds per refinement, with the CPU kind; ``--json`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from typing import Dict, List, Sequence

import torch

from compressreid.export.cpu import cpu_flags, this_kind
from compressreid.quant.calibration import calibration_batches
from compressreid.quant.compare import evaluate_cached, quantization_parity
from compressreid.quant.format import PLACEMENTS
from compressreid.quant.ptq import CALIBRATION_METHODS, calibrate, preprocess, quantize_ptq
from compressreid.quant.refine import Refinement

from _bench import load_quant_run

REFINEMENTS = {"nearest": Refinement("nearest", False), "bias": Refinement("nearest", True),
               "gptq": Refinement("gptq", False), "gptq+bias": Refinement("gptq", True),
               "gptaq": Refinement("gptaq", False), "gptaq0.5": Refinement("gptaq", False, alpha=0.5)}
DEFAULT_REFINEMENTS = ("nearest", "bias", "gptq", "gptq+bias")


def measure(run: str, target_name: str, seeds: List[int], refinements: List[str], threads: int,
            methods: Sequence[str] = (), placement: str = "") -> List[Dict]:
    """One row per (calibration method, seed, refinement) of one quantize run folder; ``methods`` empty = the
    run's own QUANT.CALIBRATION.METHOD; ``placement`` replaces the target format's Q/DQ placement."""
    loaded = load_quant_run(run, target_name, threads)
    cfg, target, images, evaluator, fp32 = loaded.cfg, loaded.target, loaded.images, loaded.evaluator, loaded.fp32
    fmt = replace(target.fmt, placement=placement) if placement else target.fmt
    fp32_path, fp32_map = loaded.fp32_path, loaded.fp32_map
    c = cfg.QUANT.CALIBRATION
    rows = []
    with tempfile.TemporaryDirectory(prefix="ptq-rounding-") as tmp:
        prepared = preprocess(fp32_path, os.path.join(tmp, "prepared.onnx"))
        for method, seed in ((m, s) for m in (methods or [c.METHOD]) for s in seeds):
            batches = calibration_batches(cfg, c.NUM_IMAGES, c.BATCH_SIZE, seed)
            cache = calibrate(prepared, batches, os.path.join(tmp, f"{method}{seed}.json"), method, c.PERCENTILE,
                              c.HISTOGRAM_BINS)
            for name in refinements:
                start = time.perf_counter()
                path = quantize_ptq(prepared, os.path.join(tmp, "int8.onnx"), batches, method, fmt,
                                    c.PERCENTILE, histogram_bins=c.HISTOGRAM_BINS, calibration_cache=cache,
                                    refinement=REFINEMENTS[name])
                seconds = time.perf_counter() - start
                int8 = evaluate_cached(evaluator, target.judged_model(path, threads), images)  # its own runtime
                parity = quantization_parity(fp32, int8, cfg.TEST.METRIC)
                rows.append({"run": os.path.basename(os.path.normpath(run)), "target": target_name, "seed": seed,
                             "calibration": method, "placement": fmt.placement, "refinement": name,
                             "fp32_mAP": fp32_map,
                             "mAP_drop": fp32_map - float(int8.result.metrics["mAP"]),
                             "cosine_mean": parity["cosine_mean"], "cosine_min": parity["cosine_min"],
                             "quantize_s": seconds})
                print(f"{rows[-1]['run']} {method} seed {seed} {name:9s}: mAP drop {rows[-1]['mAP_drop']:+.2f}, cosine "
                      f"{parity['cosine_mean']:.4f} / {parity['cosine_min']:.4f} ({seconds:.0f} s)", flush=True)
    return rows


def table(rows: List[Dict]) -> str:
    """Markdown: per run, calibration method and placement, and refinement, mean +- std over seeds and each seed's
    mAP drop."""
    lines = ["| run (FP32 mAP) | calibration, placement | rounding | mAP drop, mean ± std (per seed) | cosine mean |"
             " cosine min (worst) | quantize s |", "| --- | --- | --- | --- | --- | --- | --- |"]

    def key(row: Dict) -> tuple:
        return row["run"], f"{row['calibration']}, {row['placement']}", row["refinement"]

    for run, method, name in dict.fromkeys(key(r) for r in rows):
        group = [r for r in rows if key(r) == (run, method, name)]
        drops = [r["mAP_drop"] for r in group]
        spread = statistics.stdev(drops) if len(drops) > 1 else 0.0
        lines.append(f"| {run} ({group[0]['fp32_mAP']:.2f}) | {method} | {name} | "
                     f"{statistics.mean(drops):+.2f} ± {spread:.2f} "
                     f"({' / '.join(f'{d:+.2f}' for d in drops)}) | "
                     f"{statistics.mean(r['cosine_mean'] for r in group):.4f} | "
                     f"{min(r['cosine_min'] for r in group):.4f} | "
                     f"{statistics.mean(r['quantize_s'] for r in group):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="tools/quantize.py run folders (config.yaml + student_fp32.onnx)")
    parser.add_argument("--target", default="ort_portable", help="whose format (QUANT.TARGETS name)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="calibration samples")
    parser.add_argument("--refinements", nargs="+", default=list(DEFAULT_REFINEMENTS), choices=list(REFINEMENTS))
    parser.add_argument("--methods", nargs="+", default=[], choices=sorted(CALIBRATION_METHODS),
                        help="calibration methods to compare (default: each run's own)")
    parser.add_argument("--placement", default="", choices=["", *PLACEMENTS],
                        help="Q/DQ placement instead of the target format's own")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = its default)")
    parser.add_argument("--json", default="", help="write every row here")
    args = parser.parse_args()
    torch.set_num_threads(max(args.threads, 1) if args.threads else torch.get_num_threads())
    flags = cpu_flags()
    print(f"CPU: {this_kind().name} ({', '.join(k for k, v in flags.items() if v) or 'no listed features'})")
    rows = [row for run in args.runs for row in measure(run, args.target, args.seeds, args.refinements, args.threads,
                                                          args.methods, args.placement)]
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"cpu": this_kind().name, "cpu_flags": flags, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
