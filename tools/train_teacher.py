"""Train a ReID model (a teacher, or a student on its own), then evaluate it and check TEST.GATES.

    python tools/train_teacher.py --config-file configs/synthetic/bot_r50_ibn.yml [KEY VALUE ...]
    python tools/train_teacher.py --resume --config-file configs/synthetic/bot_r50_ibn.yml [KEY VALUE ...]
    torchrun --nproc_per_node=2 tools/train_teacher.py --config-file ... SOLVER.IMS_PER_BATCH 128

Options go before the KEY VALUE overrides. SOLVER.IMS_PER_BATCH is the global batch under torchrun.
Exit codes: 0 ok, 3 a gate failed, 2 bad usage/config/input (e.g. --resume without a checkpoint, a diverging
loss), 1 internal error, 130/143 interrupted by SIGINT/SIGTERM (continue with --resume).
"""

import os
import sys

from compressreid.cli import build_parser, run_tool, setup_logging
from compressreid.config import load_config
from compressreid.engine.hooks import TRAINING_METRICS, RaiseAtIterationHook
from compressreid.engine.launch import training_run
from compressreid.engine.supervised import train_supervised
from compressreid.engine.verdict import Verdict
from compressreid.evaluation.run import evaluate_run, evaluation_spec

# Test-only fault injection, read here and never by the library: "RANK:ITERATION" makes that rank raise
# after that iteration (used to check that a dying rank stops the whole job).
FAULT_ENV = "COMPRESSREID_FAULT_AT"


def fault_hooks() -> list:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return []
    rank, iteration = (int(part) for part in spec.split(":"))
    return [RaiseAtIterationHook(iteration, rank)]


def main() -> None:
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--resume", action="store_true",
                        help="continue OUTPUT_DIR's run from its last checkpoint (same config; paths may change)")
    parser.add_argument("--dist-timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="multi-process runs: how long a rank waits for the others before failing")
    args = parser.parse_args()
    setup_logging()
    cfg = load_config(args.config_file, args.opts)
    verdict = Verdict("teacher", cfg, evaluation_spec(cfg, TRAINING_METRICS))  # bad gates fail here, in seconds
    with training_run(cfg, "train_teacher", args.dist_timeout, resume=args.resume) as job:
        progress = sys.stderr.isatty()
        model = train_supervised(cfg, job.run, job.dist, job.device, resume=args.resume, progress=progress,
                                 extra_hooks=fault_hooks())
        if job.dist.is_main:
            evaluation = evaluate_run(cfg, job.run, model=model, label=cfg.MODEL.META_ARCHITECTURE, progress=progress)
            verdict(job.run, evaluation.payload, evaluation.judged())
            print(f"model: {job.run.file('model_final.pth')}\nmetrics: {job.run.file('metrics.json')}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
