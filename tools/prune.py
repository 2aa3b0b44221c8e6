"""Prune a trained or distilled student (PRUNE.SOURCE) with distillation fine-tuning, then gate it against itself.

    python tools/prune.py --config-file configs/synthetic/prune_r18.yml [KEY VALUE ...]
    python tools/prune.py --config-file configs/synthetic/prune_r18.yml PRUNE.RATIO 0.3 PRUNE.IMPORTANCE taylor

The pruned model is evaluated next to the unpruned one on the same query/gallery; gates may name ``unpruned``,
e.g. TEST.GATES '["mAP >= unpruned - 2.0"]'. The source checkpoint must fit its model (missing or unexpected keys
are an error unless MODEL.LOAD_STRICT False); --allow-unsafe-checkpoint loads one that needs arbitrary
unpickling (only files you trust). Options go before the KEY VALUE overrides.
Exit codes: 0 ok, 3 a gate failed, 2 bad usage/config/input (e.g. a missing PRUNE.SOURCE), 1 internal error,
130/143 interrupted.
"""

import sys

from compressreid.cli import add_checkpoint_options, build_parser, run_tool, setup_logging
from compressreid.config import load_config
from compressreid.engine.launch import training_run
from compressreid.errors import ConfigError
from compressreid.prune.run import check_prune_inputs, prune_verdict, run_prune


def main() -> None:
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--dist-timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="multi-process runs: how long a rank waits for the others before failing")
    add_checkpoint_options(parser)
    args = parser.parse_args()
    setup_logging()
    if not args.config_file:
        raise ConfigError("--config-file is required (e.g. configs/synthetic/prune_r18.yml)")
    cfg = load_config(args.config_file, args.opts)
    verdict = prune_verdict(cfg, check_prune_inputs(cfg, args.allow_unsafe_checkpoint))  # before OUTPUT_DIR
    with training_run(cfg, "prune", args.dist_timeout) as job:
        evaluation = run_prune(cfg, job.run, job.dist, job.device, progress=sys.stderr.isatty(),
                               allow_unsafe=args.allow_unsafe_checkpoint)
        if job.dist.is_main:
            verdict(job.run, evaluation.payload, evaluation.judged())
            print(f"pruned: {job.run.file('model_final.pth')}\nmetrics: {job.run.file('metrics.json')}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
