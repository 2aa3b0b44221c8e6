"""Quantize a student to INT8 ONNX (PTQ or QAT), judge it against its FP32 self, ship it with a model card.

    python tools/quantize.py --config-file configs/synthetic/quant_r18.yml [KEY VALUE ...]
    python tools/quantize.py [KEY VALUE ...]     # the synthetic default student (run tools/distill.py first)
    python tools/quantize.py --config-file F QUANT.METHOD qat QUANT.SOURCE output/synthetic/distill_r18

    python tools/quantize.py --config-file F QUANT.TARGETS '("ort_portable", "openvino", "boxmot", "tensorrt")'

One INT8 file per deployment target (QUANT.TARGETS; default the portable ONNX Runtime target, correct on AVX2,
AVX-512, VNNI and ARM64 CPUs), each judged by TEST.GATES in its own runtime plus the target's own rules (the
accumulation bound of every CPU kind it claims, runtime vs Q/DQ parity): OUTPUT_DIR/student_int8.onnx for the
first target, student_int8.<target>.onnx for the others (BoxMOT: <name>_compressreid_int8.onnx and its sidecar),
and one model_card.json; a target that fails is rejected alone (<file>.rejected.onnx). Each file is timed in turn
with FP32 in its runtime; where INT8 lost every round at QUANT.BENCHMARK.DEPLOY_BATCH the target ships its FP32
model (student_fp32.<target>.onnx) instead and keeps the INT8 file (QUANT.BENCHMARK.WHEN_SLOWER warn: ships INT8 and
warns). The source checkpoint must fit its model: missing or unexpected keys are an error unless MODEL.LOAD_STRICT False.
Exit codes: 0 ok, 3 a gate failed, 2 bad usage/config/input (missing source, empty calibration set, an ONNX
file that does not match, an unsupported operator, a model card that disagrees with its graph), 1 internal error,
130/143 interrupted by SIGINT/SIGTERM.
"""

import os
import sys

from compressreid.cli import add_checkpoint_options, build_parser, run_tool, setup_logging
from compressreid.config import load_config
from compressreid.engine.run_dir import RunDirectory
from compressreid.quant.run import CARD_FILE, check_quantize_inputs, quantize_verdict, run_quantize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "quant_r18.yml")


def main() -> None:
    parser = build_parser(__doc__.splitlines()[0])
    add_checkpoint_options(parser)
    args = parser.parse_args()
    setup_logging()
    cfg = load_config(args.config_file or DEFAULT_CONFIG, args.opts)
    plan = check_quantize_inputs(cfg, args.allow_unsafe_checkpoint)  # bad input exits 2 before OUTPUT_DIR exists
    verdict = quantize_verdict(cfg, plan)
    run = RunDirectory(cfg.OUTPUT_DIR).start(cfg, "quantize")
    with run.guard():
        payload = run_quantize(cfg, run, sys.stderr.isatty(), plan, verdict)
    shipping = payload["shipping"]
    label = ("INT8 model" if shipping["precision"] == "int8" else
             f"model (FP32: INT8 ran slower at batch {shipping['deploy_batch']}, kept as {shipping['int8_model']})")
    print(f"{label}: {run.file(payload['artifact'])}\nmodel card: {run.file(CARD_FILE)}\n"
          f"metrics: {run.file('metrics.json')}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
