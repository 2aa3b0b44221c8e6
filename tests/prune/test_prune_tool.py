"""tools/prune.py end to end on a tiny trained source: a subprocess smoke run, bad input refused before OUTPUT_DIR
is written (exit 2), and a planted fault (one pruned conv's output channels permuted) caught by the gate (exit 3)."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

from compressreid.cli import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_OK, run_tool
from compressreid.config import load_config
from compressreid.engine.source_run import PRUNING_HISTORY, load_source_model, resolve_source
from compressreid.prune import run as prune_run
from compressreid.prune.adapter import count_macs_params

from .conftest import DATA, REPO, STUDENT

TOOL = os.path.join(REPO, "tools", "prune.py")
CONFIG = os.path.join(REPO, "configs", "synthetic", "prune_r18.yml")
# A benign pruning of this tiny source loses ~4-5 mAP points; a scrambled layer loses ~15 (measured).
GATE = '("mAP >= unpruned - 8.0",)'


def prune_args(work, source, out, *extra):
    return ["--config-file", CONFIG, *DATA, *STUDENT, "DATASETS.ROOT", str(work / "datasets"), "PRUNE.SOURCE", source,
            "OUTPUT_DIR", str(out), "PRUNE.RATIO", "0.3", "PRUNE.FINETUNE_ITERS", "10", "PRUNE.ROUND_TO", "4",
            "TEST.GATES", GATE, *extra]


def run_in_process(monkeypatch, *args):
    main = runpy.run_path(TOOL)["main"]
    monkeypatch.setattr(sys, "argv", ["prune.py", *args])
    return run_tool(main)


def read(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def smoke(source_run):
    work, source = source_run
    out = work / "pruned"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, TOOL, *prune_args(work, source, out)], cwd=str(work), env=env,
                            capture_output=True, text=True, timeout=600)
    return out, result


def test_prune_tool_writes_a_gated_pruned_run(smoke, source_run):
    out, result = smoke
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    metrics = read(out / "metrics.json")
    assert metrics["accepted"] is True and read(out / "status.json")["status"] == "accepted"
    pruning = metrics["pruning"]
    assert pruning["macs_before"] > pruning["macs_after"] and pruning["params_before"] > pruning["params_after"]
    assert 0.6 <= pruning["macs_kept"] <= 0.7  # RATIO 0.3 of the MACs removed (rounding may overshoot a little)
    assert [s["step"] for s in pruning["steps"]] == [1, 2] and all("finetune" in s for s in pruning["steps"])
    assert metrics["macs"] == pruning["macs_after"] and 0 < metrics["mAP"] <= 100
    gate = metrics["gates"][0]
    assert gate["reference"] == "unpruned" and gate["passed"] is True
    # the unpruned model scored here what it scores on its own
    assert metrics["unpruned"]["mAP"] > metrics["mAP"] - 8.0
    # only the final, history-carrying checkpoint is left
    assert not list(out.glob("finetune_step*/*.pth"))


def test_pruned_run_folder_is_a_loadable_source(smoke):
    out, _ = smoke
    data = torch.load(str(out / "model_final.pth"), map_location="cpu", weights_only=True)
    assert data[PRUNING_HISTORY]["steps"]
    cfg = load_config(str(out / "config.yaml"))
    model = load_source_model(resolve_source(str(out), cfg, "PRUNE.SOURCE")).eval()
    counts = count_macs_params(model, cfg.INPUT.SIZE_TEST)
    assert counts["macs"] == read(out / "metrics.json")["macs"]
    assert model(torch.rand(2, 3, *cfg.INPUT.SIZE_TEST) * 255).shape == (2, 64)


@pytest.mark.parametrize("override, message", [
    (["PRUNE.SOURCE", "/nonexistent/run"], "PRUNE.SOURCE"),
    (["PRUNE.RATIO", "1.5"], "PRUNE.RATIO"),
    (["PRUNE.IMPORTANCE", "entropy"], "PRUNE.IMPORTANCE"),
    (["TEST.GATES", '("mAP >= teacher - 1.0",)'], "teacher"),
    (["MODEL.BACKBONE.WIDTH", "0.25"], "MODEL.BACKBONE.WIDTH"),
    (["PRUNE.TEACHER", "teacher"], "teacher checkpoint not found"),  # the source's own teacher was never trained
    (["PRUNE.STEPS", "0"], "PRUNE.STEPS"),
])
def test_bad_input_exits_2_before_output_dir_is_written(source_run, monkeypatch, capsys, override, message):
    work, source = source_run
    out = work / "refused"
    code = run_in_process(monkeypatch, *prune_args(work, source, out, *override))
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not out.exists()


def _permute_one_pruned_conv(model, unpruned):
    """The planted fault: roll the output channels of the first pruned conv, leaving its consumers as they are."""
    for name, conv in model.backbone.named_modules():
        if isinstance(conv, torch.nn.Conv2d) and conv.out_channels < unpruned.backbone.get_submodule(name).out_channels:
            order = torch.roll(torch.arange(conv.out_channels), 1)
            with torch.no_grad():
                conv.weight.copy_(conv.weight[order])
            return name
    raise AssertionError("no pruned conv")


def test_gate_catches_a_permuted_pruned_layer(source_run, monkeypatch, capsys):
    work, source = source_run
    faulted = []
    real_evaluate = prune_run.evaluate_run

    def evaluate_with_fault(cfg, run, model, reference_models, **kwargs):
        faulted.append(_permute_one_pruned_conv(model, reference_models[0].model))
        return real_evaluate(cfg, run, model=model, reference_models=reference_models, **kwargs)

    monkeypatch.setattr(prune_run, "evaluate_run", evaluate_with_fault)
    out = work / "faulted"
    code = run_in_process(monkeypatch, *prune_args(work, source, out))
    assert faulted and code == EXIT_GATE_FAILED, capsys.readouterr().err[-2000:]
    metrics = read(out / "metrics.json")
    assert metrics["accepted"] is False and read(out / "status.json")["status"] == "rejected"
    assert metrics["gates"][0]["passed"] is False
    assert "gate failed" in capsys.readouterr().err


def test_the_same_run_without_the_fault_passes(source_run, monkeypatch):
    work, source = source_run
    out = work / "benign"
    assert run_in_process(monkeypatch, *prune_args(work, source, out, "PRUNE.IMPORTANCE", "taylor")) == EXIT_OK
    assert read(out / "metrics.json")["accepted"] is True
