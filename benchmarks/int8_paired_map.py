"""Paired per-query AP difference between ONNX Runtime's optimised session and the same INT8 file run node by node
(the graph's own Q/DQ semantics), with its standard error over queries: how large an mAP difference the benchmark's
query count resolves, and whether ORT's fused integer kernels move the mAP or only single queries.

    python benchmarks/int8_paired_map.py output/q/osnet_s0_qat_recipe_v6/config.yaml \
        output/q/osnet_s0_qat_recipe_v6/student_int8.onnx

With ``--against FILE`` the reference is another ONNX file in ONNX Runtime instead (e.g. the run's
student_fp32.onnx: the INT8 file's mAP drop and its paired standard error, as the CPU here computes it); several
INT8 files are then each compared with it. ``--opts KEY VALUE ...`` changes the test set, e.g. a held-out
rendering of the synthetic benchmark that no choice saw:

    python benchmarks/int8_paired_map.py output/c16/mnv3_fb_cos_s0/config.yaml output/c16/mnv3_*/student_int8*.onnx \
        --against output/c16/mnv3_fb_cos_s0/student_fp32.onnx \
        --opts DATASETS.SYNTHETIC.SEED 1 DATASETS.SYNTHETIC.NUM_TEST_IDS 400

With ``--runtime openvino`` the INT8 files run in OpenVINO's CPU plugin, as the openvino target runs them (the
reference stays in ONNX Runtime: node by node, or ``--against``'s file). Rank-1 is paired too (hits lost and
gained, paired as the quantize run's Rank-1 rules pair them), since a Rank-1 cap can fail on a test set's draw:

    python benchmarks/int8_paired_map.py output/q19/osnet_qat/config.yaml \
        output/q19/osnet_qat/student_int8.openvino.rejected.onnx --runtime openvino \
        --against output/q19/osnet_qat/student_fp32.onnx --opts DATASETS.SYNTHETIC.SEED 1 DATASETS.SYNTHETIC.NUM_TEST_IDS 400

Each file is fed in the input convention its run's model_card.json names for it (RGB 0..255 where none does).
The test set is the config's first one, read at the ONNX file's input size, scored densely (TEST.TOPK 0) by the
config's distance without AQE or re-ranking.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import Tuple

import numpy as np
import onnx
import torch

from compressreid.config import load_config
from compressreid.data.build import load_test_sets
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.export.conventions import get_convention
from compressreid.export.model_card import card_entry
from compressreid.export.ort_model import OrtEmbedder
from compressreid.quant.compare import (Embedded, TestImages, evaluate_cached, load_test_images, paired_difference,
                                        quantization_parity, rank1_flips)
from compressreid.quant.judge import in_convention


def query_ap(evaluator: ReIDEvaluator, model, images) -> Tuple[np.ndarray, Embedded]:
    """AP (in %) of every query, in query order (NaN without a true match), and the embeddings: the evaluator's own
    per-query AP, which the quantize run's mAP rules pair too."""
    embedded = evaluate_cached(evaluator, model, images)
    return 100.0 * embedded.result.query_AP, embedded


def fed(images: TestImages, path: str) -> TestImages:
    """The test images as ``path``'s caller feeds them: in the input convention its run's model_card.json names for
    that file (a BoxMOT file takes ImageNet-normalised RGB), else RGB 0..255 (fast-reid's, the FP32 file's)."""
    name = "rgb255"
    card_path = os.path.join(os.path.dirname(os.path.abspath(path)), "model_card.json")
    if os.path.isfile(card_path):
        with open(card_path, "r", encoding="utf-8") as handle:
            card = json.load(handle)
        name = (card_entry(card, path) or {}).get("input_convention", name)
    return in_convention(images, get_convention(name))


def int8_model(path: str, runtime: str, threads: int):
    """The INT8 file as ``runtime`` runs it: OpenVINO's CPU plugin as the openvino target compiles it, or ONNX
    Runtime's optimised session."""
    if runtime == "openvino":
        from compressreid.export.openvino_model import OpenVinoEmbedder

        return OpenVinoEmbedder(path, threads=threads)
    return OrtEmbedder(path, threads=threads, optimized=True)


def input_size(path: str) -> Tuple[int, int]:
    """(height, width) of an ONNX file's image input."""
    dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return dims[2].dim_value, dims[3].dim_value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the quantize run's config.yaml (its test set is used)")
    parser.add_argument("onnx", nargs="+", help="INT8 ONNX files (one without --against)")
    parser.add_argument("--against", default="", help="compare with this ONNX file (same input) instead of the "
                        "INT8 file run node by node")
    parser.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "openvino"),
                        help="the runtime the INT8 files run in (the reference stays in ONNX Runtime)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE", help="config overrides (the test set)")
    args = parser.parse_args()
    if len(args.onnx) > 1 and not args.against:
        parser.error("several INT8 files need --against (one reference for all)")
    if len(args.opts) % 2:
        parser.error("--opts needs KEY VALUE pairs")
    if args.runtime == "openvino" and importlib.util.find_spec("openvino") is None:
        print("int8_paired_map.py: --runtime openvino needs the openvino package: pip install "
              "'compressreid[openvino]'", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    sizes = {path: input_size(path) for path in [*args.onnx, *([args.against] if args.against else [])]}
    if len(set(sizes.values())) > 1:
        parser.error(f"the files take different input sizes: {sizes}")
    height, width = sizes[args.onnx[0]]
    cfg = load_config(args.config, ["INPUT.SIZE_TEST", repr([height, width]), *args.opts, "TEST.TOPK", "0",
                                    "TEST.AQE.ENABLED", "False", "TEST.RERANK.ENABLED", "False"])
    images = load_test_images(cfg, load_test_sets(cfg)[0])
    evaluator = ReIDEvaluator.from_config(cfg)
    reference = None
    if args.against:
        reference = query_ap(evaluator, OrtEmbedder(args.against, threads=args.threads, optimized=True),
                             fed(images, args.against))
    for path in args.onnx:
        optimised = query_ap(evaluator, int8_model(path, args.runtime, args.threads), fed(images, path))
        against = reference if reference is not None else query_ap(
            evaluator, OrtEmbedder(path, threads=args.threads, optimized=False), fed(images, path))
        report(path, optimised, against, args.against or "node by node", evaluator.metric, args.runtime)
    return 0


def report(path: str, optimised: Tuple[np.ndarray, Embedded], reference: Tuple[np.ndarray, Embedded], label: str,
           metric: str, runtime: str) -> None:
    (ap, embedded), (reference_ap, reference_embedded) = optimised, reference
    valid = np.isfinite(ap) & np.isfinite(reference_ap)
    mean, stderr = paired_difference(ap, reference_ap)
    diff = (ap - reference_ap)[valid]
    if not len(diff):
        raise SystemExit(f"{path}: no query has a true match in the gallery (or the embeddings are not finite)")
    flips = rank1_flips(reference_embedded.result, embedded.result)  # as the quantize run's Rank-1 rules pair them
    parity = quantization_parity(reference_embedded, embedded, metric)
    print(f"{path}: {valid.sum()} queries: mAP {runtime} {np.nanmean(ap):.3f}, {label} "
          f"{np.nanmean(reference_ap):.3f}; paired difference {mean:+.3f} +- {stderr:.3f} (standard error); "
          f"{(np.abs(diff) > 1e-6).sum()} queries changed, the largest by {np.abs(diff).max():.2f} AP points; "
          f"Rank-1 {embedded.result.metrics['rank1']:.2f} vs {reference_embedded.result.metrics['rank1']:.2f}, "
          f"{flips['rank1_lost']:.0f} queries lost, {flips['rank1_gained']:.0f} gained (drop SE "
          f"{flips['rank1_drop_se']:.2f}); "
          f"embedding cosine mean / min {parity['cosine_mean']:.4f} / {parity['cosine_min']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
