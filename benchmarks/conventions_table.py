"""The same student exported under each input convention (rgb255, rgb_imagenet, bgr255, bgr_imagenet) and quantized
as the ort_portable target makes it: mAP of each file fed its own convention, and cosine against the default
(rgb255) file's embeddings, on the same model and the same images.

    python benchmarks/conventions_table.py output/synthetic/demo/prune [--threads 1] [--keep DIR] [--float-conversion]

Per convention: the FP32 graph (ConventionAdapter + export_onnx) and its INT8 file (ONNX Runtime's pre-processing,
calibration on the run's QUANT.CALIBRATION training images converted to the convention, the ort_portable format, no
fallback: the all-INT8 file tools/quantize.py judges first). Every file is run in ONNX Runtime on the run's first
test set, decoded once and converted to the file's convention. The conventions differ only in a few float ops in
front of the first convolution, so the FP32 rows must agree to rounding; the INT8 rows show what quantizing those
ops (and the first layer's input range) in a different convention costs; --float-conversion adds, per convention
that has conversion ops, the file quantized with those ops left in FP32.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Dict, List

import onnx
import torch

from compressreid.config import load_config
from compressreid.data.build import load_test_sets
from compressreid.engine.source_run import load_source_model, resolve_source
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.export.conventions import CONVENTIONS, DEFAULT_CONVENTION, ConventionAdapter, get_convention
from compressreid.export.onnx_export import export_onnx
from compressreid.export.ort_model import OrtEmbedder
from compressreid.quant.calibration import calibration_batches
from compressreid.quant.compare import Embedded, evaluate_cached, load_test_images, quantization_parity
from compressreid.quant.fallback import ptq_quantizer
from compressreid.quant.judge import in_convention
from compressreid.quant.ptq import QUANTIZED_OPS, preprocess
from compressreid.quant.targets import QUANT_TARGETS

ORDER = (DEFAULT_CONVENTION, "rgb_imagenet", "bgr255", "bgr_imagenet")
FLOAT_CONVERSION = "int8_float_conversion"


def conversion_nodes(prepared: str) -> List[str]:
    """The quantizable nodes in front of the model's own normalisation (its first Sub): the convention's
    conversion ops that PTQ would quantize (a channel flip is not quantized anyway)."""
    nodes = onnx.load(prepared, load_external_data=False).graph.node
    first = next(i for i, node in enumerate(nodes) if node.op_type == "Sub")
    return [node.name for node in nodes[:first] if node.op_type in QUANTIZED_OPS]


def make_files(cfg, model, name: str, batches, folder: str, float_conversion: bool) -> Dict[str, str]:
    """The FP32 graph taking convention ``name``, its INT8 file in the ort_portable format and, with
    ``float_conversion``, an INT8 file whose conversion ops stay in FP32 (none for a convention without them)."""
    convention, q = get_convention(name), cfg.QUANT
    fp32 = export_onnx(ConventionAdapter(model, convention), os.path.join(folder, f"fp32_{name}.onnx"),
                       tuple(cfg.INPUT.SIZE_TEST), q.OPSET)
    prepared = preprocess(fp32, os.path.join(folder, f"prepared_{name}.onnx"))
    fmt = QUANT_TARGETS.get("ort_portable").format_from_config(q)
    quantize = ptq_quantizer(prepared, [convention.from_rgb255(b) for b in batches], q.CALIBRATION.METHOD, fmt,
                             q.CALIBRATION.PERCENTILE, q.CALIBRATION.HISTOGRAM_BINS)
    files = {"fp32": fp32, "int8": quantize(os.path.join(folder, f"int8_{name}.onnx"))}
    exclude = conversion_nodes(prepared)
    if float_conversion and exclude:
        files[FLOAT_CONVERSION] = quantize(os.path.join(folder, f"int8_{name}_float_conversion.onnx"), exclude)
    return files


def row(name: str, int8: str, embedded: Dict[str, Embedded], default: Dict[str, Embedded]) -> List[str]:
    fp32_vs_default = quantization_parity(default["fp32"], embedded["fp32"])
    int8_vs_default = quantization_parity(default["int8"], embedded[int8])
    int8_vs_fp32 = quantization_parity(embedded["fp32"], embedded[int8])
    label = name if int8 == "int8" else f"{name}, conversion ops in FP32"
    return [label, f"{embedded['fp32'].result.metrics['mAP']:.3f}", f"{fp32_vs_default['cosine_min']:.6f}",
            f"{embedded[int8].result.metrics['mAP']:.2f}",
            f"{int8_vs_default['cosine_mean']:.4f} / {int8_vs_default['cosine_min']:.4f}",
            f"{int8_vs_default['top10_overlap']:.1f}",
            f"{int8_vs_fp32['cosine_mean']:.4f} / {int8_vs_fp32['cosine_min']:.4f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder (config.yaml + model_final.pth), e.g. output/synthetic/demo/prune")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime and torch threads")
    parser.add_argument("--keep", default="", help="write the files here instead of a temporary folder")
    parser.add_argument("--float-conversion", action="store_true",
                        help="also quantize each convention with its conversion ops kept in FP32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(os.path.join(args.run, "config.yaml"), ["DATALOADER.NUM_WORKERS", "0"])
    model = load_source_model(resolve_source(args.run, cfg, "run")).eval()
    images = load_test_images(cfg, load_test_sets(cfg)[0])
    evaluator = ReIDEvaluator.from_config(cfg)
    q = cfg.QUANT.CALIBRATION
    batches = calibration_batches(cfg, q.NUM_IMAGES, q.BATCH_SIZE, cfg.SEED)
    names = [*ORDER, *(n for n in CONVENTIONS.names() if n not in ORDER)]
    embedded: Dict[str, Dict[str, Embedded]] = {}
    with tempfile.TemporaryDirectory(prefix="conventions-") as tmp:
        folder = args.keep or tmp
        os.makedirs(folder, exist_ok=True)
        for name in names:
            fed = in_convention(images, get_convention(name))
            embedded[name] = {kind: evaluate_cached(evaluator, OrtEmbedder(path, args.threads), fed)
                              for kind, path in make_files(cfg, model, name, batches, folder,
                                                                 args.float_conversion).items()}
    header = ["convention", "FP32 mAP", "FP32 cos min vs rgb255 FP32", "INT8 mAP",
              "INT8 cos mean / min vs rgb255 INT8", "top-10 overlap %", "INT8 vs own FP32 cos mean / min"]
    print(f"{args.run}: {len(images.q_images)} query, {len(images.g_images)} gallery images at "
          f"{tuple(cfg.INPUT.SIZE_TEST)}; {sum(len(b) for b in batches)} calibration images; format "
          f"{QUANT_TARGETS.get('ort_portable').format_from_config(cfg.QUANT).describe()}")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name in names:
        for int8 in (k for k in embedded[name] if k != "fp32"):
            print("| " + " | ".join(row(name, int8, embedded[name], embedded[DEFAULT_CONVENTION])) + " |")


if __name__ == "__main__":
    main()
