"""Train a ReID model (a teacher, or a student on its own), then evaluate it and check TEST.GATES.

    python tools/train_teacher.py --config-file configs/synthetic/bot_r50_ibn.yml [KEY VALUE ...]

Exit codes: 0 ok, 3 a gate failed, 2 bad usage/config/input, 1 internal error.
"""

import sys

from compressreid.cli import build_parser, run_tool, setup_logging
from compressreid.config import load_config
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.supervised import train_supervised
from compressreid.evaluation.run import evaluate_run


def main() -> None:
    args = build_parser(__doc__.splitlines()[0]).parse_args()
    setup_logging()
    cfg = load_config(args.config_file, args.opts)
    run = RunDirectory(cfg.OUTPUT_DIR).start(cfg, "train_teacher")
    with run.guard():
        model = train_supervised(cfg, run, progress=sys.stderr.isatty())
        evaluate_run(cfg, run, model=model, label=cfg.MODEL.META_ARCHITECTURE, progress=sys.stderr.isatty())
    print(f"model: {run.file('model_final.pth')}\nmetrics: {run.file('metrics.json')}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
