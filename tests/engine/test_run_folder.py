"""A run folder belongs to one run: published files get the user's umask, a second run is refused while the first
holds the folder, a new run clears the previous run's outputs (never the user's files or its own inputs), and a
signal is recorded as 'interrupted'."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from compressreid.config import load_config
from compressreid.engine.clear import clear_previous_run
from compressreid.engine.io import (atomic_copy, atomic_torch_save, atomic_write_json, current_umask,
                                    ensure_writable_dir)
from compressreid.engine.run_dir import STATUS_FILE, RunDirectory
from compressreid.engine.run_lock import LOCK_FILE, FolderLock
from compressreid.errors import ConfigError, Interrupted


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_current_umask_reads_without_changing_it():
    previous = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert current_umask() == 0o027
    finally:
        os.umask(previous)


def test_atomic_writes_publish_with_the_umask_mode(tmp_path, umask_022):
    json_path = atomic_write_json(str(tmp_path / "metrics.json"), {"mAP": 1.0})
    model_path = atomic_torch_save(str(tmp_path / "model_final.pth"), {"model": {"w": torch.zeros(2)}})
    copy_path = atomic_copy(model_path, str(tmp_path / "copy.pth"))
    for path in (json_path, model_path, copy_path):
        assert mode(path) == 0o644, path  # mkstemp alone gives 0600: unreadable to every other user
    assert sorted(os.listdir(tmp_path)) == ["copy.pth", "metrics.json", "model_final.pth"]  # no partial file left
    os.umask(0o077)
    assert mode(atomic_write_json(str(tmp_path / "private.json"), {})) == 0o600


def test_output_dir_that_cannot_be_created_is_one_config_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"afile is a file, not a folder"):
        ensure_writable_dir(str(tmp_path / "afile" / "out"))
    with pytest.raises(ConfigError, match=r"cannot be created"):
        ensure_writable_dir("/sys/compressreid-test-output")  # sysfs: no new folders, not even for root


HOLD_LOCK = """
import sys, time
from compressreid.engine.run_lock import FolderLock
lock = FolderLock(sys.argv[1], "train_teacher").acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_folder_held_by_another_process_is_refused_naming_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError) as info:
            RunDirectory(str(tmp_path)).start(load_config(), "evaluate")
        message = str(info.value)
        assert str(tmp_path) in message and f"pid {holder.pid}" in message and "train_teacher" in message
        assert time.strftime("%Y-%m-%d") in message  # its start time
        assert not (tmp_path / STATUS_FILE).exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the lock with its holder: no stale lock after a killed run
    RunDirectory(str(tmp_path)).start(load_config(), "evaluate").finish({})


def test_the_lock_is_held_until_the_run_ends(tmp_path):
    cfg = load_config()
    first = RunDirectory(str(tmp_path)).start(cfg, "evaluate")
    with pytest.raises(ConfigError, match="in use by another run"):
        RunDirectory(str(tmp_path)).start(cfg, "evaluate")
    first.finish({})
    second = RunDirectory(str(tmp_path)).start(cfg, "evaluate")
    with pytest.raises(ValueError):
        with second.guard():
            raise ValueError("boom")
    FolderLock(str(tmp_path), "check").acquire().release()  # guard released it on the way out
    assert (tmp_path / LOCK_FILE).is_file()


def write_previous_run(folder):
    """What a finished training + quantization + pruning run leaves, a killed write's partial file, user files."""
    for name in ("model_final.pth", "last_checkpoint.pth", "train_log.jsonl", "metrics.json", "status.json",
                 "student_int8.onnx", "model_card.json", "distill_adapters.pth", ".tmp-1234metrics.json",
                 ".export-99.onnx", "my_notes.txt", "model_final_backup.pth", "student_int8.openvino.onnx",
                 "student_int8.ort_vnni.rejected.onnx", "osnet_x0_25_compressreid_int8.onnx",
                 "osnet_x0_25_compressreid_int8.onnx.metadata.json", "resnet50_compressreid_int8.rejected.onnx",
                 "student_fp32.openvino.onnx", "osnet_x0_25_compressreid_fp32.onnx",
                 "osnet_x0_25_compressreid_fp32.onnx.metadata.json", "my_model_int8.onnx", "my_model_fp32.onnx"):
        (folder / name).write_text("old")
    for name in ("plots", "tensorboard", "work", "finetune_step1", "my_folder"):
        (folder / name).mkdir()
        (folder / name / "file").write_text("old")


def test_a_new_run_clears_only_what_the_previous_run_wrote(tmp_path):
    write_previous_run(tmp_path)
    RunDirectory(str(tmp_path)).start(load_config(), "train_teacher")
    assert sorted(os.listdir(tmp_path)) == [LOCK_FILE, "config.yaml", "model_final_backup.pth", "my_folder",
                                            "my_model_fp32.onnx", "my_model_int8.onnx", "my_notes.txt", STATUS_FILE]
    assert json.loads((tmp_path / STATUS_FILE).read_text())["status"] == "running"


def test_a_resumed_run_keeps_its_training_state(tmp_path):
    write_previous_run(tmp_path)
    removed = clear_previous_run(str(tmp_path), load_config(), resume=True)
    for kept in ("last_checkpoint.pth", "train_log.jsonl", "tensorboard"):
        assert (tmp_path / kept).exists() and kept not in removed
    assert "model_final.pth" in removed and "plots" in removed


def test_a_file_the_run_reads_is_never_cleared(tmp_path):
    write_previous_run(tmp_path)
    weights = str(tmp_path / "model_final.pth")  # evaluating a model in its own training folder
    removed = clear_previous_run(str(tmp_path), load_config("", ["MODEL.WEIGHTS", weights]))
    assert os.path.isfile(weights) and "model_final.pth" not in removed and "metrics.json" in removed


@pytest.mark.parametrize("error, status", [(KeyboardInterrupt(), "interrupted"),
                                           (Interrupted(signal.SIGTERM), "interrupted"),
                                           (RuntimeError("bug"), "failed")])
def test_guard_records_a_signal_as_interrupted(tmp_path, error, status):
    run = RunDirectory(str(tmp_path)).start(load_config(), "train_teacher")
    with pytest.raises(type(error)):
        with run.guard():
            raise error
    assert json.loads((tmp_path / STATUS_FILE).read_text())["status"] == status
