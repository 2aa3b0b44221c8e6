"""Large-gallery evaluation on one planted data set: the machine's FP32 GEMM floor, the exact FP32 top-k search and
the int8 gallery (int8 candidates + exact FP32 re-scoring of a window), side by side.

Each measurement runs in its own subprocess so its peak RSS is its own (the int8 worker streams the gallery into
its store and never holds it in FP32). Ratios are to the GEMM floor measured in the same run: numpy/BLAS
``q @ g.T`` for the same product, in the same blocks, same threads, scores written and discarded; the "share of
the GEMM peak" is a path's effective rate (the product's 2 nq ng d flops over its search time) over the floor's.
Process CPU seconds are printed beside wall seconds: on a shared machine they show how much was waiting. A window
sweep reports, per window, whether mAP and every top-k list equal the exact search's and how many queries the
int8 error bound leaves unproven.

    python benchmarks/eval_large_gallery.py --queries 10000 --gallery 100000
    python benchmarks/eval_large_gallery.py --queries 10000 --gallery 1000000 --skip-dense
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import planted_gallery as planted

from compressreid.evaluation import compute_distance, evaluate_rank_detailed, evaluate_rank_topk, topk_search
from compressreid.evaluation.gallery_search import int8_topk_search, prepare_queries, rescore_window, resolve_window
from compressreid.evaluation.int8_gallery import Int8Gallery


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


class Clock:
    """Wall and process CPU seconds of one step (CPU time says how much of the wall time was contention)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def _scores(res, out: dict) -> dict:
    out.update(mAP=res.mAP, mINP=res.mINP, rank1=res.rank1, incomplete=int(getattr(res, "num_incomplete", 0)))
    return out


def _lists_differing(top_i: np.ndarray, path: str) -> int:
    return int((top_i != np.load(path)).any(axis=1).sum()) if path and os.path.exists(path) else -1


def _build_int8(args, spec, g_pids) -> tuple:
    with Clock() as clock:
        gallery = Int8Gallery(spec.dim, "cosine", directory=args.tmpdir, block_rows=args.gallery_block)
        for rows in planted.gallery_chunks(spec, g_pids):
            gallery.add(rows)
        gallery.finalize()
    return gallery, clock


def _gemm(args, spec, labels, q, out) -> None:
    g = planted.gallery(spec, labels[1])
    buf = np.empty(min(args.query_chunk, len(q)) * min(args.gallery_block, len(g)), dtype=np.float32)
    with Clock() as clock:
        for start in range(0, len(g), args.gallery_block):
            block = g[start : start + args.gallery_block]
            for qs in range(0, len(q), args.query_chunk):
                rows = q[qs : qs + args.query_chunk]
                np.matmul(rows, block.T, out=buf[: len(rows) * len(block)].reshape(len(rows), len(block)))
    out.update(search_s=clock.wall, search_cpu_s=clock.cpu, peak_rss_mb=_peak_rss_mb())


def _dense(args, spec, labels, q, out) -> None:
    g = planted.gallery(spec, labels[1])
    with Clock() as clock:
        res = evaluate_rank_detailed(compute_distance(q, g, "cosine"), *labels)
    out.update(search_s=clock.wall, search_cpu_s=clock.cpu, peak_rss_mb=_peak_rss_mb())
    _scores(res, out)


def _fp32(args, spec, labels, q, out) -> None:
    g = planted.gallery(spec, labels[1])
    with Clock() as clock:
        top_d, top_i = topk_search(q, g, args.k, "cosine", args.query_chunk, args.gallery_block)
    out.update(search_s=clock.wall, search_cpu_s=clock.cpu, peak_rss_mb=_peak_rss_mb())
    if args.lists:
        np.save(args.lists, top_i)
    del g  # scoring is measured apart; it should not find the gallery still held
    _scores(evaluate_rank_topk(top_d, top_i, *labels), out)


def _int8(args, spec, labels, q, out) -> None:
    gallery, build = _build_int8(args, spec, labels[1])
    out.update(build_s=build.wall, rss_after_build_mb=_peak_rss_mb())
    with gallery, Clock() as clock:
        res = int8_topk_search(q, gallery, args.k, resolve_window(args.k, args.window))  # library blocks
    out.update(search_s=clock.wall, search_cpu_s=clock.cpu, peak_rss_mb=_peak_rss_mb(), unproven=res.num_unproven,
               at_risk=res.num_at_risk,
               lists_differing=_lists_differing(res.topk_idx, args.lists))
    _scores(evaluate_rank_topk(res.topk_dist, res.topk_idx, *labels), out)


def _sweep(args, spec, labels, q, out) -> None:
    """One int8 pass at the largest window, then each window re-scored from its prefix (times: not comparable)."""
    gallery, _ = _build_int8(args, spec, labels[1])
    windows = sorted(int(w) for w in args.sweep.split(","))
    with gallery:
        qn = prepare_queries(q, gallery)
        with Clock() as clock:
            cand = gallery.candidates(qn, windows[-1], keep_scores=True)
        out.update(search_s=clock.wall, rows=[])
        for w in windows:
            with Clock() as clock:
                top_d, top_i, proven, likely = rescore_window(qn, gallery, cand.prefix(w), args.k)
            row = {"window": w, "rescore_s": clock.wall, "unproven": int((~proven).sum()),
                   "at_risk": int((~likely).sum()), "lists_differing": _lists_differing(top_i, args.lists)}
            out["rows"].append(_scores(evaluate_rank_topk(top_d, top_i, *labels), row))


WORKERS = {"gemm": _gemm, "dense": _dense, "fp32": _fp32, "int8": _int8, "sweep": _sweep}


def worker(args) -> dict:
    """One measurement in this process: labels and queries, then the ``args.worker`` path (which makes its gallery).

    ``peak_rss_mb`` is the peak at the end of the search, before the top-k lists are scored.
    """
    spec = planted.PlantedSpec(args.queries, args.gallery, args.dim, args.ids, args.per_id, args.noise, args.seed)
    out = {"path": args.worker, "rss_imports_mb": _peak_rss_mb()}
    labels = planted.labels(spec)
    WORKERS[args.worker](args, spec, labels, planted.queries(spec, labels[0]), out)
    return out


def run_child(args, path: str, num_q: int, num_g: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", path, "--queries", str(num_q), "--gallery", str(num_g)]
    for name in ("dim", "k", "ids", "per_id", "noise", "seed", "query_chunk", "gallery_block", "window", "sweep",
                 "lists", "tmpdir"):
        if getattr(args, name) is not None:
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def machine_line() -> str:
    """CPU model, the flags the FP32 and int8 kernels care about, and the threads each library uses."""
    import faiss
    import threadpoolctl

    model, present = "?", set()
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
    blas = {f"{p['internal_api']} {p['num_threads']}" for p in threadpoolctl.threadpool_info()
            if p["user_api"] == "blas"}
    return (f"CPU {model}, {os.cpu_count()} cores; flags: {' '.join(f for f in FLAGS if f in present)} "
            f"(absent: {' '.join(f for f in FLAGS if f not in present) or '-'}); threads: BLAS {', '.join(blas)}, "
            f"faiss/OpenMP and ONNX Runtime {faiss.omp_get_max_threads()}")


def describe(label: str, r: dict, floor: dict, flops: float) -> str:
    gflops = flops / r["search_s"] / 1e9
    share = gflops / (flops / floor["search_s"] / 1e9)
    extra = f"; build {r['build_s']:.1f} s" if "build_s" in r else ""
    quality = f"; mAP {r['mAP']:.6f}" if "mAP" in r else ""
    return (f"{label:<26} {r['search_s']:7.2f} s (cpu {r['search_cpu_s']:6.1f} s)  "
            f"{r['search_s'] / floor['search_s']:.2f}x floor  {gflops:6.1f} GFLOP/s = {100 * share:5.1f}% of GEMM "
            f"peak  "
            f"peak RSS {r['peak_rss_mb']:5.0f} MB (+{r['peak_rss_mb'] - r['rss_imports_mb']:.0f} over imports)"
            f"{extra}{quality}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--gallery", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--ids", type=int, default=5000, help="identities shared by queries and gallery")
    p.add_argument("--per-id", type=int, default=8, help="gallery images planted per identity")
    p.add_argument("--noise", type=float, default=1.7, help="norm of the noise added to identity centres")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--query-chunk", type=int, default=2048)
    p.add_argument("--gallery-block", type=int, default=8192)
    p.add_argument("--window", type=int, default=0, help="int8 window of the timed run (0 = library default)")
    p.add_argument("--sweep", default="100,110,120,130,150,200,300,500,1000,1500,2000",
                   help="windows re-scored from one int8 pass ('' = no sweep)")
    p.add_argument("--tmpdir", default=None, help="where the int8 worker writes its float32 row file")
    p.add_argument("--dense-queries", type=int, default=2000, help="small size also run densely, for ratios")
    p.add_argument("--dense-gallery", type=int, default=20_000)
    p.add_argument("--skip-dense", action="store_true")
    p.add_argument("--worker", choices=["gemm", "fp32", "int8", "sweep", "dense"], help=argparse.SUPPRESS)
    p.add_argument("--lists", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def report(args, floor: dict, exact: dict, int8: dict, sweep: dict) -> None:
    flops = 2.0 * args.queries * args.gallery * args.dim
    print(f"large size {args.queries} x {args.gallery} x {args.dim}, k={args.k}; FP32 blocks {args.query_chunk} x "
          f"{args.gallery_block}, int8 the library's defaults; search time only (data, int8 build and scoring apart)")
    print(describe("FP32 GEMM floor (numpy)", floor, floor, flops))
    print(describe("exact FP32 top-k", exact, floor, flops))
    print(describe(f"int8 gallery, window {resolve_window(args.k, args.window)}", int8, floor, flops))
    over = [r["peak_rss_mb"] - r["rss_imports_mb"] for r in (int8, exact)]
    print(f"  int8 / exact FP32: time {int8['search_s'] / exact['search_s']:.2f}x, peak RSS "
          f"{int8['peak_rss_mb'] / exact['peak_rss_mb']:.2f}x ({over[0] / over[1]:.2f}x over imports); mAP identical: "
          f"{int8['mAP'] == exact['mAP']}; top-k lists differing: {int8['lists_differing']}; queries at risk: "
          f"{int8['at_risk']}, unproven: {int8['unproven']}; queries with matches beyond k: {exact['incomplete']}")
    print(f"  not in RSS: the int8 worker's {4 * args.gallery * args.dim / 2**20:.0f} MB float32 row file, which the "
          f"OS page cache may hold (given back under memory pressure)")
    if sweep:
        print(f"window sweep (one int8 pass at the largest window, {sweep['search_s']:.1f} s; then each window):")
        for row in sweep["rows"]:
            print(f"  window {row['window']:5d}: mAP {row['mAP']:.6f} identical {str(row['mAP'] == exact['mAP']):5s} "
                  f"lists differing {row['lists_differing']:5d}  at risk {row['at_risk']:5d}  "
                  f"unproven {row['unproven']:5d}  re-scoring {row['rescore_s']:.2f} s")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    print(machine_line())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.skip_dense:
        small = (args.dense_queries, args.dense_gallery)
        dense, topk = run_child(args, "dense", *small), run_child(args, "fp32", *small)
        print(f"small size {small[0]} x {small[1]} x {args.dim}, k={args.k}: dense {dense['search_s']:.2f} s / "
              f"{dense['peak_rss_mb']:.0f} MB, top-k {topk['search_s']:.2f} s / {topk['peak_rss_mb']:.0f} MB, "
              f"mAP difference {topk['mAP'] - dense['mAP']:+.2e} (top-k lower bounds for queries with matches "
              f"beyond k: {topk['incomplete']})")
    with tempfile.TemporaryDirectory() as tmp:
        args.lists = os.path.join(tmp, "fp32_lists.npy")
        floor = run_child(args, "gemm", args.queries, args.gallery)
        exact = run_child(args, "fp32", args.queries, args.gallery)
        int8 = run_child(args, "int8", args.queries, args.gallery)
        sweep = run_child(args, "sweep", args.queries, args.gallery) if args.sweep else None
    report(args, floor, exact, int8, sweep)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
