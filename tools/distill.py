"""Distil teachers into a student, then evaluate student and teachers on the same query/gallery and check TEST.GATES.

    python tools/distill.py --config-file configs/synthetic/distill_r18.yml [KEY VALUE ...]
    python tools/distill.py [KEY VALUE ...]    # the synthetic default recipe; trains its teacher first if needed
    python tools/distill.py --resume --config-file configs/synthetic/distill_r18.yml [KEY VALUE ...]
    torchrun --nproc_per_node=2 tools/distill.py --config-file ... SOLVER.IMS_PER_BATCH 128

Teachers: DISTILL.TEACHERS.CONFIGS (config files or run folders) and WEIGHTS. Gates may name ``teacher``,
e.g. TEST.GATES '["mAP >= 0.8 * teacher"]'. A teacher checkpoint must fit its config's model (missing or
unexpected keys are an error unless MODEL.LOAD_STRICT False); --allow-unsafe-checkpoint loads one that needs
arbitrary unpickling (only files you trust). Options go before the KEY VALUE overrides.
Exit codes: 0 ok, 3 a gate failed, 2 bad usage/config/input (e.g. a missing teacher checkpoint), 1 internal error,
130/143 interrupted (continue with --resume).
"""

import logging
import os
import sys
from typing import Sequence

from yacs.config import CfgNode

from compressreid.cli import add_checkpoint_options, build_parser, run_tool, setup_logging
from compressreid.config import load_config
from compressreid.distill.sources import resolve_teacher_sources
from compressreid.distill.train import (check_distill_inputs, distill_verdict, evaluate_distillation, train_distill,
                                        train_missing_teachers)
from compressreid.engine.launch import training_run

# The recipe run without --config-file. The configs are not installed with the package, so it is found next to
# this script, in the repository the tools belong to.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "distill_r18.yml")

logger = logging.getLogger("distill")


def default_recipe(opts: Sequence[str]) -> CfgNode:
    """DEFAULT_CONFIG with its teacher configs read from the repository, so it runs from any directory
    (outputs, data and checkpoints stay relative to the current one); ``opts`` still override everything."""
    teachers = tuple(os.path.join(REPO, c) for c in load_config(DEFAULT_CONFIG).DISTILL.TEACHERS.CONFIGS)
    return load_config(DEFAULT_CONFIG, ["DISTILL.TEACHERS.CONFIGS", repr(teachers), *opts])


def main() -> None:
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--resume", action="store_true",
                        help="continue OUTPUT_DIR's run from its last checkpoint (same config; paths may change)")
    parser.add_argument("--dist-timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="multi-process runs: how long a rank waits for the others before failing")
    add_checkpoint_options(parser)
    args = parser.parse_args()
    setup_logging()
    progress = sys.stderr.isatty()
    cfg = load_config(args.config_file, args.opts) if args.config_file else default_recipe(args.opts)
    sources = resolve_teacher_sources(cfg)
    verdict = distill_verdict(cfg, sources)  # a bad gate fails here, before any training
    if not args.config_file:
        logger.warning("no --config-file: running the default recipe %s", DEFAULT_CONFIG)
        train_missing_teachers(sources, args.dist_timeout, progress)
    check_distill_inputs(cfg, sources)  # before OUTPUT_DIR is touched
    with training_run(cfg, "distill", args.dist_timeout, resume=args.resume) as job:
        outcome = train_distill(cfg, job.run, job.dist, job.device, resume=args.resume, progress=progress,
                                allow_unsafe=args.allow_unsafe_checkpoint)
        if job.dist.is_main:
            evaluation = evaluate_distillation(cfg, job.run, outcome, progress=progress)
            verdict(job.run, evaluation.payload, evaluation.judged())
            print(f"student: {job.run.file('model_final.pth')}\nmetrics: {job.run.file('metrics.json')}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
