"""The same INT8 files in OpenVINO on every x86 instruction set this CPU can stand in for, on one machine.

oneDNN, OpenVINO's CPU kernel library, takes a cap on the instruction set it dispatches to from the environment
(``ONEDNN_MAX_CPU_ISA``, read once when the library loads, so each cap runs in its own process): on an AVX-512 VNNI
CPU, ``AVX512_CORE`` gives the kernels of an AVX-512 CPU without VNNI and ``AVX2`` those of an AVX2-only CPU, both of
which add u8 x s8 pairs in a saturating int16. Each file's embeddings of the run's query and gallery images under
each cap are compared with the uncapped ("native") ones and with the file's Q/DQ semantics (ONNX Runtime, node by
node), and scored (mAP). A file whose weights cannot saturate (the portable format) should not move at all; an
8-bit-weight file built and judged on a VNNI machine shows what it does on the others.

    python benchmarks/isa_parity.py output/q19/r18q_ptq/config.yaml output/q19/r18q_ptq/student_int8.onnx \\
        output/q19/r18q_ptq/student_int8.ort_vnni.onnx

Caps above the CPU's own instruction set change nothing (oneDNN never dispatches above what the CPU has), so the
kernels each cap compiled to are printed: check them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

import numpy as np
import torch
from torch.nn import functional as F

from compressreid.config.loading import load_config
from compressreid.data.build import load_test_sets
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.export.cpu import cpu_flags
from compressreid.export.ort_model import OrtEmbedder
from compressreid.quant.compare import embed_images, load_test_images

NATIVE = "native"
# oneDNN's instruction-set caps (its ONEDNN_MAX_CPU_ISA values for x86); it ignores a name it does not know (seen:
# "BOGUS" ran the uncapped VNNI kernels), which would report them under the cap's name, so only these are taken
ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
               "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16")


def _images(config: str, opts: List[str]):
    cfg = load_config(config, opts)
    (test_set,) = load_test_sets(cfg)
    return cfg, load_test_images(cfg, test_set)


def _embed(model, images, batch: int, flip: bool) -> torch.Tensor:
    """Query then gallery embeddings, as the run's evaluator makes them (TEST.FLIP)."""
    return torch.cat([embed_images(model, images.q_images, batch, flip),
                      embed_images(model, images.g_images, batch, flip)])


def child(args) -> None:
    """Runs in a process whose environment holds the cap: every file's OpenVINO embeddings, to ``args.out``."""
    from compressreid.export.openvino_model import OpenVinoEmbedder, int8_kernel_names

    cfg, images = _images(args.config, args.opts)
    flip = ReIDEvaluator.from_config(cfg).flip
    arrays, kernels = {}, {}
    for i, path in enumerate(args.files):
        model = OpenVinoEmbedder(path, args.threads)
        arrays[f"f{i}"] = _embed(model, images, args.batch, flip).numpy()
        kernels[path] = sorted(set().union(*(int8_kernel_names(c) for c in model.compiled.values())))
    np.savez(args.out, **arrays)
    with open(args.out + ".json", "w", encoding="utf-8") as handle:
        json.dump(kernels, handle)


def _run_cap(args, isa: str, folder: str) -> Dict[str, object]:
    out = os.path.join(folder, f"{isa}.npz")
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa != NATIVE:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    command = [sys.executable, os.path.abspath(__file__), args.config, *args.files, "--child", "--out", out,
               "--threads", str(args.threads), "--batch", str(args.batch)]
    if args.opts:
        command += ["--opts", *args.opts]
    subprocess.run(command, env=env, check=True)
    arrays = np.load(out)
    with open(out + ".json", encoding="utf-8") as handle:
        kernels = json.load(handle)
    return {"embeddings": [torch.from_numpy(arrays[f"f{i}"]) for i in range(len(args.files))], "kernels": kernels}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a quantize run's config.yaml (its test set is used)")
    parser.add_argument("files", nargs="+", help="INT8 ONNX files taking that run's input")
    parser.add_argument("--isas", nargs="+", default=[NATIVE, "AVX512_CORE", "AVX2"],
                        help="oneDNN instruction-set caps ('native': none), compared with the first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE", help="config overrides (the test set)")
    parser.add_argument("--json", default="", help="also write every number here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    missing = [f for f in [args.config, *args.files] if not os.path.isfile(f)]
    if missing:
        print(f"error: not a file: {missing[0]}", file=sys.stderr)
        return 2
    unknown = [isa for isa in args.isas if isa != NATIVE and isa not in ONEDNN_ISAS]
    if unknown:
        print(f"error: --isas {unknown[0]} is not a oneDNN cap; expected '{NATIVE}' or one of {', '.join(ONEDNN_ISAS)}",
              file=sys.stderr)
        return 2
    if importlib.util.find_spec("openvino") is None:
        print("error: OpenVINO is not installed: pip install 'compressreid[openvino]'", file=sys.stderr)
        return 2
    if args.child:
        child(args)
        return 0

    cfg, images = _images(args.config, args.opts)
    evaluator = ReIDEvaluator.from_config(cfg)
    num_query = len(images.q_records)

    def mAP(embeddings: torch.Tensor) -> float:
        return evaluator.evaluate_features(embeddings[:num_query], images.q_records, embeddings[num_query:],
                                           images.g_records).metrics["mAP"]

    with tempfile.TemporaryDirectory() as folder:
        caps = {isa: _run_cap(args, isa, folder) for isa in args.isas}
    features = " ".join(sorted(f for f, present in cpu_flags().items() if present)) or "none"
    print(f"CPU features: {features}; {len(images.q_records)} queries, {len(images.g_records)} gallery images; "
          f"OpenVINO, {args.threads} threads; caps compared with '{args.isas[0]}'")
    report = []
    for i, path in enumerate(args.files):
        model = OrtEmbedder(path, args.threads, optimized=False)
        qdq = _embed(model, images, args.batch, evaluator.flip)
        reference = caps[args.isas[0]]["embeddings"][i]
        print(f"{path}: Q/DQ semantics mAP {mAP(qdq):.2f}")
        for isa in args.isas:
            emb = caps[isa]["embeddings"][i]
            to_ref, to_qdq = F.cosine_similarity(emb, reference), F.cosine_similarity(emb, qdq)
            row = {"file": path, "isa": isa, "mAP": mAP(emb), "max_abs_diff": float((emb - reference).abs().max()),
                   "cosine_min": float(to_ref.min()), "cosine_mean": float(to_ref.mean()),
                   "qdq_cosine_min": float(to_qdq.min()), "qdq_cosine_mean": float(to_qdq.mean()),
                   "kernels": caps[isa]["kernels"][path]}
            report.append(row)
            print(f"  {isa:12s} mAP {row['mAP']:.2f}; vs {args.isas[0]}: max |diff| {row['max_abs_diff']:.3g}, "
                  f"cosine min {row['cosine_min']:.4f} mean {row['cosine_mean']:.4f}; vs Q/DQ: cosine min "
                  f"{row['qdq_cosine_min']:.4f} mean {row['qdq_cosine_mean']:.4f}; int8 kernels "
                  f"{', '.join(row['kernels'])}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"cpu_features": features, "rows": report}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
