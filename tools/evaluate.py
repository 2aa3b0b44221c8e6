"""Evaluate a ReID model: metrics.json, ROC, distance distributions and worst-query rank lists.

    python tools/evaluate.py --config-file F MODEL.WEIGHTS path/to/model.pth [KEY VALUE ...]

The checkpoint must fit the model: missing or unexpected keys are an error unless MODEL.LOAD_STRICT False
(a classifier sized for another dataset is skipped either way). --allow-unsafe-checkpoint loads a file that
needs arbitrary unpickling (only files you trust). Options go before the KEY VALUE overrides.
Exit codes: 0 ok, 3 a TEST.GATES rule failed, 2 bad usage/config/input, 1 internal error, 130/143 interrupted.
"""

import sys

from compressreid.cli import add_checkpoint_options, build_parser, run_tool, setup_logging
from compressreid.config import load_config
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.verdict import Verdict
from compressreid.evaluation.run import evaluate_run, evaluation_spec


def main() -> None:
    parser = build_parser(__doc__.splitlines()[0])
    add_checkpoint_options(parser)
    args = parser.parse_args()
    setup_logging()
    cfg = load_config(args.config_file, args.opts)
    verdict = Verdict("evaluate", cfg, evaluation_spec(cfg))
    run = RunDirectory(cfg.OUTPUT_DIR).start(cfg, "evaluate")
    with run.guard():
        evaluation = evaluate_run(cfg, run, progress=sys.stderr.isatty(), allow_unsafe=args.allow_unsafe_checkpoint)
        verdict(run, evaluation.payload, evaluation.judged())
    print(f"metrics: {run.file('metrics.json')}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
