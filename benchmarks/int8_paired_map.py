"""Paired per-query AP difference between ONNX Runtime's optimised session and the same INT8 file run node by node
(the graph's own Q/DQ semantics), with its standard error over queries: how large an mAP difference the benchmark's
query count resolves, and whether ORT's fused integer kernels move the mAP or only single queries.

    python benchmarks/int8_paired_map.py output/q/osnet_s0_qat_recipe_v6/config.yaml \
        output/q/osnet_s0_qat_recipe_v6/student_int8.onnx

With ``--against FILE`` the reference is another ONNX file in ONNX Runtime instead (e.g. the run's
student_fp32.onnx: the INT8 file's mAP drop and its paired standard error, as the CPU here computes it).

The test set is the config's first one, read at the ONNX file's input size, scored densely (TEST.TOPK 0) by the
config's distance without AQE or re-ranking.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import torch

from compressreid.config import load_config
from compressreid.data.build import load_test_sets
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.export.ort_model import OrtEmbedder
from compressreid.quant.compare import evaluate_cached, load_test_images, paired_difference

from _bench import per_query_ap


def query_ap(evaluator: ReIDEvaluator, model, images) -> np.ndarray:
    """AP (in %) of every query, in query order (NaN without a true match)."""
    embedded = evaluate_cached(evaluator, model, images)
    return per_query_ap(embedded.q_feats, embedded.g_feats, images, evaluator.metric)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the quantize run's config.yaml (its test set is used)")
    parser.add_argument("onnx", help="an INT8 ONNX file")
    parser.add_argument("--against", default="", help="compare with this ONNX file (same input) instead of the "
                        "INT8 file run node by node")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dims = onnx.load(args.onnx, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    height, width = dims[2].dim_value, dims[3].dim_value
    cfg = load_config(args.config, ["INPUT.SIZE_TEST", repr([height, width]), "TEST.TOPK", "0"])
    images = load_test_images(cfg, load_test_sets(cfg)[0])
    evaluator = ReIDEvaluator.from_config(cfg)
    optimised = query_ap(evaluator, OrtEmbedder(args.onnx, threads=args.threads, optimized=True), images)
    reference = query_ap(evaluator, OrtEmbedder(args.against or args.onnx, threads=args.threads,
                                                optimized=bool(args.against)), images)
    label = args.against or "node by node"
    valid = np.isfinite(optimised) & np.isfinite(reference)
    mean, stderr = paired_difference(optimised, reference)
    diff = (optimised - reference)[valid]
    if not len(diff):
        raise SystemExit(f"{args.onnx}: no query has a true match in the gallery (or the embeddings are not finite)")
    print(f"{valid.sum()} queries: mAP optimised {np.nanmean(optimised):.3f}, {label} {np.nanmean(reference):.3f}; "
          f"paired difference {mean:+.3f} +- {stderr:.3f} (standard error); {(np.abs(diff) > 1e-6).sum()} queries "
          f"changed, the largest by {np.abs(diff).max():.2f} AP points")


if __name__ == "__main__":
    main()
