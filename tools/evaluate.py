"""Evaluate a ReID model: metrics.json, ROC, distance distributions and worst-query rank lists.

    python tools/evaluate.py --config-file F MODEL.WEIGHTS path/to/model.pth [KEY VALUE ...]

Exit codes: 0 ok, 3 a TEST.GATES rule failed, 2 bad usage/config/input, 1 internal error.
"""

import sys

from compressreid.cli import build_parser, run_tool, setup_logging
from compressreid.config import load_config
from compressreid.engine.run_dir import RunDirectory
from compressreid.evaluation.run import evaluate_run


def main() -> None:
    args = build_parser(__doc__.splitlines()[0]).parse_args()
    setup_logging()
    cfg = load_config(args.config_file, args.opts)
    run = RunDirectory(cfg.OUTPUT_DIR).start(cfg, "evaluate")
    with run.guard():
        evaluate_run(cfg, run, progress=sys.stderr.isatty())
    print(f"metrics: {run.file('metrics.json')}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
