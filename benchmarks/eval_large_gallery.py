"""Time and peak memory of large-gallery evaluation (faiss top-k + evaluate_rank_topk) against the dense path.

Each measurement runs in its own subprocess so its peak RSS is its own. Embeddings are random unit vectors with
planted identities: every query's identity has ``--per-id`` gallery images; the rest of the gallery are
distractors with unique identities.

    python benchmarks/eval_large_gallery.py --queries 10000 --gallery 100000 --dim 512 --k 100 --ids 5000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from compressreid.evaluation import compute_distance, evaluate_rank_detailed, evaluate_rank_topk, topk_search


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(num_q: int, num_g: int, dim: int, num_ids: int, per_id: int, noise: float, seed: int, chunk: int):
    """Queries and gallery with planted identities; the gallery is generated chunk by chunk to bound memory."""
    rng = np.random.default_rng(seed)
    centers = _unit(rng.standard_normal((num_ids, dim)))
    num_planted = min(num_ids * per_id, num_g)
    g_pids = np.concatenate([np.arange(num_planted) % num_ids, num_ids + np.arange(num_g - num_planted)])
    g_pids = g_pids[rng.permutation(num_g)]
    g_camids = rng.integers(0, 6, num_g)
    q_pids = rng.integers(0, num_ids, num_q)
    q_camids = rng.integers(0, 6, num_q)
    sigma = noise / np.sqrt(dim)  # per-coordinate noise so the noise vector has norm ~ noise

    def sample(pids):
        base = np.where((pids < num_ids)[:, None], centers[np.minimum(pids, num_ids - 1)], 0.0)
        return _unit(base + sigma * rng.standard_normal((len(pids), dim)).astype(np.float32))

    g = np.empty((num_g, dim), dtype=np.float32)
    for s in range(0, num_g, chunk):
        g[s : s + chunk] = sample(g_pids[s : s + chunk])
    return sample(q_pids), g, (q_pids, g_pids, q_camids, g_camids)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def worker(args) -> dict:
    """One measurement in this process: generate data, then run the ``args.worker`` path."""
    rss_imports = _peak_rss_mb()
    t0 = time.perf_counter()
    q, g, labels = make_data(args.queries, args.gallery, args.dim, args.ids, args.per_id, args.noise, args.seed,
                             chunk=10_000)
    out = {"path": args.worker, "gen_s": time.perf_counter() - t0, "rss_imports_mb": rss_imports,
           "rss_after_gen_mb": _peak_rss_mb()}
    t0 = time.perf_counter()
    if args.worker == "topk":
        top_d, top_i = topk_search(q, g, args.k, "cosine", query_chunk=args.query_chunk)
        out["search_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = evaluate_rank_topk(top_d, top_i, *labels)
        out["eval_s"] = time.perf_counter() - t1
        out["incomplete"] = res.num_incomplete
        out["message"] = res.message
    else:
        dist = compute_distance(q, g, "cosine")
        out["search_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = evaluate_rank_detailed(dist, *labels)
        out["eval_s"] = time.perf_counter() - t1
    out["total_s"] = time.perf_counter() - t0
    out.update(mAP=res.mAP, mINP=res.mINP, rank1=res.rank1, peak_rss_mb=_peak_rss_mb())
    return out


def run_child(args, path: str, num_q: int, num_g: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", path, "--queries", str(num_q), "--gallery", str(num_g)]
    for name in ("dim", "k", "ids", "per_id", "noise", "seed", "query_chunk"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(label: str, r: dict) -> str:
    extra = f", incomplete {r['incomplete']}" if "incomplete" in r else ""
    return (
        f"{label:<28} search {r['search_s']:8.2f} s  eval {r['eval_s']:7.2f} s  total {r['total_s']:8.2f} s  "
        f"peak RSS {r['peak_rss_mb']:6.0f} MB (imports {r['rss_imports_mb']:.0f}, +data {r['rss_after_gen_mb']:.0f}, "
        f"evaluation adds {r['peak_rss_mb'] - r['rss_after_gen_mb']:.0f})  "
        f"mAP {r['mAP']:.4f} mINP {r['mINP']:.4f} R1 {r['rank1']:.4f}{extra}"
    )


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
    p.add_argument("--query-chunk", type=int, default=8192)
    p.add_argument("--dense-queries", type=int, default=2000, help="small size also run densely, for ratios")
    p.add_argument("--dense-gallery", type=int, default=20_000)
    p.add_argument("--skip-dense", action="store_true")
    p.add_argument("--worker", choices=["topk", "dense"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if not args.skip_dense:
        small = (args.dense_queries, args.dense_gallery)
        dense = run_child(args, "dense", *small)
        topk = run_child(args, "topk", *small)
        print(f"small size {small[0]} x {small[1]} x {args.dim}, k={args.k}")
        print(describe("  dense (torch + argsort)", dense))
        print(describe("  top-k (faiss)", topk))
        print(
            f"  dense/top-k ratio: time {dense['total_s'] / topk['total_s']:.2f}x, "
            f"peak RSS {dense['peak_rss_mb'] / topk['peak_rss_mb']:.2f}x, "
            f"mAP difference {topk['mAP'] - dense['mAP']:+.2e}"
        )
    big = run_child(args, "topk", args.queries, args.gallery)
    print(f"large size {args.queries} x {args.gallery} x {args.dim}, k={args.k}")
    print(describe("  top-k (faiss)", big))
    if big.get("message"):
        print(f"  {big['message']}")


if __name__ == "__main__":
    main()
