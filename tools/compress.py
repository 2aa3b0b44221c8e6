"""Compress a ReID model in one command: teacher -> distill -> prune -> INT8, each stage gated before the next.

    python tools/compress.py --config-file configs/synthetic/compress_r18.yml [KEY VALUE ...]
    python tools/compress.py [KEY VALUE ...]    # the synthetic demo, configs/synthetic/compress_r18.yml

PIPELINE.STAGES and PIPELINE.CONFIGS name the stages and each stage's own config (with its TEST.GATES); stage i
runs in OUTPUT_DIR/<stage>. PIPELINE.* and OUTPUT_DIR overrides configure the pipeline, any other KEY VALUE applies
to every stage (e.g. MODEL.DEVICE cpu DATALOADER.NUM_WORKERS 0). Re-running the same command reuses every stage
whose config and input are unchanged (see OUTPUT_DIR/manifest.json), and continues an interrupted training stage
(teacher, distill) from its last checkpoint. Checkpoints must fit their models unless MODEL.LOAD_STRICT False;
--allow-unsafe-checkpoint loads ones that need arbitrary unpickling (only files you trust). Options go before the
KEY VALUE overrides.
Exit codes: 0 ok, 3 a gate failed (report written, later stages not run), 2 bad usage/config/input, 1 internal error,
130/143 interrupted by SIGINT/SIGTERM (manifest.json says 'interrupted'; the same command continues).
"""

import os
import sys
from typing import Sequence

from yacs.config import CfgNode

from compressreid.cli import add_checkpoint_options, build_parser, run_tool, setup_logging
from compressreid.config import load_config
from compressreid.errors import GateFailed
from compressreid.pipeline.builtin import INT8_MODEL
from compressreid.pipeline.runner import plan_pipeline, run_pipeline, split_overrides

# The recipe run without --config-file. The configs are not installed with the package, so it is found next to
# this script, in the repository the tools belong to.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "compress_r18.yml")


def default_recipe(opts: Sequence[str]) -> CfgNode:
    """DEFAULT_CONFIG with its stage configs read from the repository, so it runs from any directory (outputs and
    data stay relative to the current one); ``opts`` still override everything."""
    configs = tuple(os.path.join(REPO, c) for c in load_config(DEFAULT_CONFIG).PIPELINE.CONFIGS)
    return load_config(DEFAULT_CONFIG, ["PIPELINE.CONFIGS", repr(configs), *opts])


def main() -> None:
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--skip-latency", action="store_true",
                        help="do not export and time each stage's model (the report shows n/a)")
    add_checkpoint_options(parser)
    args = parser.parse_args()
    setup_logging()
    own, shared = split_overrides(args.opts)
    cfg = load_config(args.config_file, own) if args.config_file else default_recipe(own)
    plan = plan_pipeline(cfg, shared)  # every check that is cheap, before any folder is written
    try:
        result = run_pipeline(plan, progress=sys.stderr.isatty(), latency=not args.skip_latency,
                              allow_unsafe=args.allow_unsafe_checkpoint)
    except GateFailed:
        print(f"report: {os.path.join(plan.output_dir, 'report.md')}")
        raise
    last = plan.stages[-1].name
    int8 = last == "quantize" and os.path.basename(result.final_artifact or "") == INT8_MODEL  # else FP32 shipped
    print(f"report: {result.report}\n{'INT8 model' if int8 else 'model'}: {result.final_artifact}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
