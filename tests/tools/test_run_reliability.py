"""The tools as a user runs them: what they publish is readable, a run folder holds one run, a rerun clears the
previous run, a signal ends a run as 'interrupted', and bad input (budgets, OUTPUT_DIR, images, a diverging loss,
checkpoints that do not fit or are unsafe) is one line and exit code 2 before the work, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compressreid.cli import run_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(REPO, "tools")
CONFIG = os.path.join(REPO, "configs", "synthetic", "bot_r18.yml")

TINY = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "MODEL.BACKBONE.WIDTH", "0.125",
    "MODEL.BACKBONE.FEAT_DIM", "64", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCH", "2",
    "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
    "TEST.EVAL_PERIOD", "0", "TEST.ROC.ENABLED", "False", "TEST.WORST_QUERIES", "1", "TEST.IMS_PER_BATCH", "64",
    "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0",
]


def train_args(work: Path, out, *extra, root=None):
    return ["--config-file", CONFIG, *TINY, "DATASETS.ROOT", str(root or work / "datasets"), "OUTPUT_DIR", str(out),
            *extra]


def start(tool: str, *args, cwd) -> subprocess.Popen:
    """The tool as a user starts it from a shell with umask 022."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, os.path.join(TOOLS, tool), *args], cwd=str(cwd), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.umask(0o022))


def in_process(monkeypatch, capsys, tool: str, *args):
    """Run a tool's main through run_tool; returns (exit code, its 'error:' lines, stderr)."""
    main = runpy.run_path(os.path.join(TOOLS, tool))["main"]
    monkeypatch.setattr(sys, "argv", [tool, *args])
    code = run_tool(main)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")], err


def status(folder) -> dict:
    return json.loads((Path(folder) / "status.json").read_text())


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("reliability")
    proc = start("train_teacher.py", *train_args(work, work / "train"), cwd=work)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    return work


def test_published_files_are_readable_under_the_users_umask(trained):
    out = trained / "train"
    for name in ("metrics.json", "status.json", "config.yaml", "model_final.pth", "last_checkpoint.pth",
                 "train_log.jsonl"):
        assert mode(out / name) == 0o644, name  # atomic writes went through mkstemp, which creates 0600
    datasets = next((trained / "datasets").iterdir()) / "market1501"
    assert mode(datasets) == 0o755  # rendered in a mkdtemp (0700) folder, then published


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), proc.communicate()[1][-3000:] if proc.poll() is not None else f"no {path}"


def test_a_running_training_holds_its_folder_and_sigterm_ends_it_as_interrupted(trained):
    out = trained / "busy"
    first = start("train_teacher.py", *train_args(trained, out, "SOLVER.MAX_EPOCH", "200"), cwd=trained)
    try:
        wait_for(out / "last_checkpoint.pth", first)
        second = start("train_teacher.py", *train_args(trained, out), cwd=trained)
        _, stderr = second.communicate(timeout=300)
        assert second.returncode == 2, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in stderr
        assert f"OUTPUT_DIR {out} is in use by another run (pid {first.pid}, train_teacher, started " in errors[0]
        assert status(out)["status"] == "running"  # the refused run wrote nothing
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 143, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "interrupted: stopped by SIGTERM (the run folder records 'interrupted')"
    assert "Traceback" not in stderr
    assert status(out)["status"] == "interrupted"
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]  # no partial file left behind


def test_a_failed_rerun_leaves_nothing_of_the_previous_run(trained, monkeypatch, capsys):
    out = trained / "rerun"
    shutil.copytree(trained / "train", out)
    (out / "my_notes.txt").write_text("mine")
    (out / ".tmp-123model_final.pth").write_bytes(b"half a file from a killed run")
    assert (out / "model_final.pth").is_file() and (out / "plots").is_dir()
    code, errors, err = in_process(monkeypatch, capsys, "train_teacher.py",
                                   *train_args(trained, out, "SOLVER.BASE_LR", "1e6", "SOLVER.MAX_EPOCH", "5"))
    # a diverging loss is a configuration error: exit 2, one line with the iteration and the remedy
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert "training diverged" in errors[0] and "at iteration" in errors[0] and "SOLVER.BASE_LR" in errors[0]
    assert status(out)["status"] == "failed"
    left = set(os.listdir(out))
    assert not left & {"model_final.pth", "metrics.json", "plots", ".tmp-123model_final.pth"}
    assert "my_notes.txt" in left  # never the user's files


@pytest.mark.parametrize("key, value, words", [
    ("SOLVER.MAX_EPOCH", "-1", "SOLVER.MAX_EPOCH must be >= 1"),
    ("SOLVER.IMS_PER_BATCH", "0", "SOLVER.IMS_PER_BATCH must be >= 1"),
    ("DATALOADER.NUM_INSTANCE", "0", "DATALOADER.NUM_INSTANCE must be >= 1"),
])
def test_a_budget_out_of_range_exits_2_before_output_dir_exists(tmp_path, monkeypatch, capsys, key, value, words):
    out = tmp_path / "out"
    code, errors, _ = in_process(monkeypatch, capsys, "train_teacher.py", *train_args(tmp_path, out, key, value))
    assert code == 2 and len(errors) == 1 and words in errors[0]
    assert not out.exists()


@pytest.mark.parametrize("where", ["under_a_file", "sysfs"])
def test_an_output_dir_that_cannot_be_written_exits_2_in_one_line(tmp_path, monkeypatch, capsys, where):
    (tmp_path / "afile").write_text("x")
    # sysfs accepts no new folders, even from root (who may write into a chmod 0555 folder)
    out = tmp_path / "afile" / "out" if where == "under_a_file" else Path("/sys/compressreid-test-output")
    code, errors, err = in_process(monkeypatch, capsys, "evaluate.py", *train_args(tmp_path, out))
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith(f"error: OUTPUT_DIR {out} cannot be created")


def test_a_corrupt_query_image_is_found_before_training(trained, tmp_path, monkeypatch, capsys):
    root = tmp_path / "datasets"
    shutil.copytree(trained / "datasets", root)
    bad = sorted(next(root.iterdir()).glob("market1501/query/*.jpg"))[0]
    bad.write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    code, errors, _ = in_process(monkeypatch, capsys, "train_teacher.py", *train_args(trained, out, root=root))
    assert code == 2 and len(errors) == 1
    assert f"query image {bad} is unreadable" in errors[0] and "DATASETS.ON_CORRUPT_IMAGE skip" in errors[0]
    assert not (out / "train_log.jsonl").exists()  # found before the first iteration
    assert status(out)["status"] == "failed"


def save_variant(trained, name, edit=lambda state: state, **extra):
    state = torch.load(trained / "train" / "model_final.pth", weights_only=True)["model"]
    path = trained / name
    torch.save({"model": edit(state), **extra}, path)
    return path


def test_evaluate_refuses_a_checkpoint_without_its_backbone(trained, monkeypatch, capsys):
    weights = save_variant(trained, "no_backbone.pth",
                           lambda state: {k: v for k, v in state.items() if not k.startswith("backbone.")})
    args = train_args(trained, trained / "eval_partial", "MODEL.WEIGHTS", str(weights))
    code, errors, _ = in_process(monkeypatch, capsys, "evaluate.py", *args)
    assert code == 2 and len(errors) == 1
    assert "missing key(s) (first: backbone." in errors[0] and "MODEL.LOAD_STRICT False" in errors[0]
    code, errors, _ = in_process(monkeypatch, capsys, "evaluate.py", *args, "MODEL.LOAD_STRICT", "False")
    # the documented opt-out for partial loads: the model loads and is evaluated (its gates then judge it)
    assert code in (0, 3)
    assert "mAP" in json.loads((trained / "eval_partial" / "metrics.json").read_text())


def test_evaluate_loads_an_unsafe_checkpoint_only_with_the_flag(trained, monkeypatch, capsys):
    weights = save_variant(trained, "unsafe.pth", args=argparse.Namespace(lr=0.1))
    args = train_args(trained, trained / "eval_unsafe", "MODEL.WEIGHTS", str(weights))
    code, errors, _ = in_process(monkeypatch, capsys, "evaluate.py", *args)
    assert code == 2 and len(errors) == 1 and "--allow-unsafe-checkpoint" in errors[0]
    code, _, err = in_process(monkeypatch, capsys, "evaluate.py", "--allow-unsafe-checkpoint", *args)
    assert code == 0, err[-3000:]
