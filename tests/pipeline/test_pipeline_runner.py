"""The pipeline runner with fake stages: manifest, resume rules, a gate failure through tools/compress.py, bad input
refused before any folder is written, and the report (table rows, embedded figures)."""

from __future__ import annotations

import json
import os
import runpy
import sys
from dataclasses import replace

import pytest
from PIL import Image

from compressreid.cli import run_tool
from compressreid.config import load_config
from compressreid.engine.io import atomic_write_json
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.run_lock import FolderLock
from compressreid.errors import ConfigError, DataError
from compressreid.pipeline import runner
from compressreid.pipeline.runner import plan_pipeline, run_pipeline
from compressreid.pipeline.stages import FINAL_MODEL, STAGES, Stage, StageOutput, register_stage

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "compress.py")
NAMES = ("fake1", "fake2", "fake3")
CALLS: list = []


def _fake_run(cfg, stage_dir, inputs):
    """A stage whose model is the previous model's bytes plus its SEED, and whose mAP is 50 + SEED."""
    CALLS.append(os.path.basename(stage_dir))
    if cfg.SEED == 99:
        raise DataError("fake: unreadable input")
    run = RunDirectory(stage_dir).start(cfg, "fake")
    base = open(os.path.join(inputs.previous, FINAL_MODEL), "rb").read() if inputs.previous else b""
    with open(run.file(FINAL_MODEL), "wb") as handle:
        handle.write(base + f"|{cfg.SEED}".encode())
    score = 50.0 + cfg.SEED
    metrics = {"model": "fake", "dataset": "Synthetic", "mAP": score, "rank1": score + 10, "mINP": score - 10,
               "collapse_mean_cosine": 0.02, "distinct_nn_share": 0.85}
    atomic_write_json(run.file("plots", "Synthetic_curves.json"), {
        "label": "fake", "dataset": "Synthetic",
        "roc": {"fpr": [1e-4, 1e-2, 1.0], "tpr": [0.1, score / 100, 1.0], "auc": 0.9, "num_pos": 3, "num_neg": 9},
        "distances": {"edges": [0.0, 0.5, 1.0], "pos": [1.5, 0.5], "neg": [0.5, 1.5], "num_pos": 3, "num_neg": 9}})
    Image.new("RGB", (40, 20), (int(score), 0, 0)).save(run.file("plots", "Synthetic_worst_queries.png"))
    if cfg.SEED != 98:  # SEED 98: a stage that forgets to hand its results to its verdict
        inputs.verdict(run, metrics)
    return StageOutput(run.path, metrics)


def _fake_link(previous):
    return {"PRUNE.SOURCE": previous} if previous else {}


def _fake_reads(cfg):
    return [os.path.join(cfg.PRUNE.SOURCE, FINAL_MODEL)] if cfg.PRUNE.SOURCE else []


for _name in NAMES:  # the tool looks stages up in the library's registry; registered once per test session
    if _name not in STAGES:
        register_stage(Stage(_name, _fake_run, link=_fake_link, reads=_fake_reads))


def write_stage_config(path, seed=0, gates=("mAP >= 50",)):
    path.write_text(f"SEED: {seed}\nTEST:\n  GATES: {json.dumps(list(gates))}\n")
    return str(path)


@pytest.fixture
def work(tmp_path):
    for name in NAMES:
        write_stage_config(tmp_path / f"{name}.yml")
    CALLS.clear()
    return tmp_path


def pipeline_opts(work, names=NAMES, configs=None):
    configs = configs if configs is not None else [str(work / f"{n}.yml") for n in names]
    return ["PIPELINE.STAGES", repr(tuple(names)), "PIPELINE.CONFIGS", repr(tuple(configs)),
            "OUTPUT_DIR", str(work / "out")]


def run_once(work, **kwargs):
    CALLS.clear()
    run_pipeline(plan_pipeline(load_config("", pipeline_opts(work))), measure=False, **kwargs)
    return read_manifest(work)


def read_manifest(work):
    return json.loads((work / "out" / "manifest.json").read_text())


def call_tool(monkeypatch, *args):
    main = runpy.run_path(TOOL)["main"]
    monkeypatch.setattr(sys, "argv", ["compress.py", *args])
    return run_tool(main)


def test_manifest_records_every_stage_and_chains_inputs_to_outputs(work):
    manifest = run_once(work)
    assert CALLS == list(NAMES) and manifest["status"] == "accepted"
    stages = manifest["stages"]
    assert [s["name"] for s in stages] == list(NAMES) and all(s["status"] == "accepted" for s in stages)
    for s in stages:
        assert len(s["config_hash"]) == 64 and len(s["output_checksum"]) == 64 and s["wall_seconds"] >= 0
        assert s["metrics"]["mAP"] == 50.0 and s["gates"][0]["rule"] == "mAP >= 50" and s["gates"][0]["passed"]
        assert s["folder"] == str(work / "out" / s["name"]) and s["config"] == str(work / f"{s['name']}.yml")
    # stage i reads exactly what stage i-1 wrote; the first stage reads nothing
    assert stages[0]["inputs"] == {}
    for before, after in zip(stages, stages[1:]):
        assert after["inputs"] == {os.path.join(before["folder"], FINAL_MODEL): before["outputs"][FINAL_MODEL]}
    assert load_config(str(work / "out" / "fake2" / "config.yaml")).PRUNE.SOURCE == str(work / "out" / "fake1")
    assert manifest["final_artifact"] == str(work / "out" / "fake3" / FINAL_MODEL)


def test_the_final_artifact_is_the_file_the_last_stage_says_it_ships(work, monkeypatch):
    """A stage may ship another file than its first artifact (the quantize stage ships the FP32 model its card
    names when QUANT.BENCHMARK.WHEN_SLOWER ship_fp32 found INT8 slower): the manifest names that file."""
    from compressreid.pipeline.builtin import quantize_shipped

    shipped = replace(STAGES.get("fake3"), shipped=lambda folder: "faster.onnx")
    monkeypatch.setitem(STAGES._entries, "fake3", shipped)
    assert run_once(work)["final_artifact"] == str(work / "out" / "fake3" / "faster.onnx")
    # the shipped file is checksummed with the artifacts: a changed one re-runs the stage on resume
    (work / "out" / "fake3" / "faster.onnx").write_text("changed")
    assert run_once(work)["stages"][2]["reused"] is False and CALLS == ["fake3"]
    assert quantize_shipped(str(work)) == "student_int8.onnx"  # no card yet
    (work / "model_card.json").write_text(json.dumps({"model": "student_fp32.ort_portable.onnx"}))
    assert quantize_shipped(str(work)) == "student_fp32.ort_portable.onnx"


def test_the_report_measures_the_file_a_stage_judged_and_names_the_one_it_ships(tmp_path, monkeypatch):
    """A stage whose metrics are of its INT8 file but which ships its FP32 model (QUANT.BENCHMARK.WHEN_SLOWER): the
    report row's size and latency are the judged file's, so accuracy and speed describe one file, and a note names
    the shipped one."""
    from compressreid.pipeline import measure

    (tmp_path / "int8.onnx").write_bytes(b"i" * 100)
    (tmp_path / "fp32.onnx").write_bytes(b"f" * 400)
    timed = []
    monkeypatch.setattr(measure, "_latency", lambda path, size, cfg: timed.append(path) or {"ms_p50": 1.5})
    stage = Stage("ships_fp32", _fake_run, artifacts=("int8.onnx", "card.json"), onnx="int8.onnx",
                  shipped=lambda folder: "fp32.onnx")
    out = measure.measure_stage(stage, load_config("", ["INPUT.SIZE_TEST", "[32, 16]"]), str(tmp_path))
    assert out["size_bytes"] == 100 and timed == [str(tmp_path / "int8.onnx")] and out["latency_ms"] == 1.5
    assert out["shipped"] == "fp32.onnx"
    assert "ships fp32.onnx, not int8.onnx (its card says why); the row's numbers are int8.onnx's" in out["notes"]
    same = measure.measure_stage(replace(stage, shipped=None), load_config("", []), str(tmp_path), latency=False)
    assert "shipped" not in same and not any(n.startswith("ships") for n in same["notes"])


def test_resume_skips_unchanged_reruns_a_changed_stage_and_everything_after(work, caplog):
    run_once(work)
    caplog.set_level("INFO")
    manifest = run_once(work)
    assert CALLS == [] and all(s["reused"] for s in manifest["stages"])
    assert caplog.text.count("SKIPPED") == 3

    write_stage_config(work / "fake2.yml", seed=1)
    caplog.clear()
    manifest = run_once(work)
    assert CALLS == ["fake2", "fake3"]
    first, second, third = manifest["stages"]
    assert first["reused"] and not second["reused"] and not third["reused"]
    assert second["reason"] == "its config changed" and third["reason"] == "an earlier stage (fake2) ran again"
    assert second["metrics"]["mAP"] == 51.0
    assert "'fake2': RUNNING because its config changed" in caplog.text

    (work / "out" / "fake3" / FINAL_MODEL).write_bytes(b"tampered")
    manifest = run_once(work)
    assert CALLS == ["fake3"] and manifest["stages"][2]["reason"] == "its output model_final.pth is modified"
    (work / "out" / "fake1" / FINAL_MODEL).unlink()
    manifest = run_once(work)
    assert CALLS == list(NAMES) and manifest["stages"][0]["reason"] == "its output model_final.pth is missing"


def test_a_failed_gate_stops_the_chain_with_exit_3_and_a_report(work, monkeypatch, capsys):
    write_stage_config(work / "fake2.yml", gates=("mAP >= 60",))
    config = work / "compress.yml"
    config.write_text(f"PIPELINE:\n  STAGES: {json.dumps(list(NAMES))}\n  CONFIGS: "
                      f"{json.dumps([str(work / f'{n}.yml') for n in NAMES])}\nOUTPUT_DIR: {work / 'out'}\n")
    code = call_tool(monkeypatch, "--config-file", str(config), "--skip-latency")
    assert code == 3 and CALLS == ["fake1", "fake2"]
    assert "gate failed" in capsys.readouterr().err
    manifest = read_manifest(work)
    assert manifest["status"] == "rejected" and manifest["final_artifact"] is None
    assert [s["status"] for s in manifest["stages"]] == ["accepted", "rejected", "not run"]
    assert manifest["stages"][1]["gates"][0]["passed"] is False and "mAP >= 60" in manifest["stages"][1]["error"]
    assert not (work / "out" / "fake3").exists()
    report = (work / "out" / "report.md").read_text()
    assert "Status: rejected" in report and "FAIL: mAP >= 60 (got 50, needed >= 60)" in report
    assert "| 3 | fake3 | not run |" in report

    write_stage_config(work / "fake2.yml", gates=("mAP >= 50",))  # fixed: the rejected stage and the rest run
    CALLS.clear()
    assert call_tool(monkeypatch, "--config-file", str(config), "--skip-latency") == 0
    assert CALLS == ["fake2", "fake3"]
    assert read_manifest(work)["stages"][1]["reason"] == "its last run was rejected"


def test_an_error_in_a_stage_is_recorded_and_stops_the_chain(work, monkeypatch, capsys):
    write_stage_config(work / "fake2.yml", seed=99)
    assert call_tool(monkeypatch, "--skip-latency", *pipeline_opts(work)) == 2
    assert CALLS == ["fake1", "fake2"] and "error: fake: unreadable input" in capsys.readouterr().err
    manifest = read_manifest(work)
    assert manifest["status"] == "failed" and "unreadable input" in manifest["error"]
    assert [s["status"] for s in manifest["stages"]] == ["accepted", "failed", "not run"]
    assert manifest["stages"][1]["error"] == "DataError: fake: unreadable input"


@pytest.mark.parametrize("names, configs, words", [
    (("fake1", "fake9"), None, "unknown pipeline stage 'fake9'; valid names:"),
    (NAMES, ["fake1.yml", "fake2.yml"], "PIPELINE.CONFIGS has 2 entries for 3 PIPELINE.STAGES"),
    (("fake1", "fake2"), ["fake1.yml", "missing.yml"], "stage 'fake2': config file not found"),
    (("fake1", "fake1"), ["fake1.yml", "fake2.yml"], "fake1 appear twice"),
    (("fake1", "fake2"), ["fake1.yml", "bad_gate.yml"], "gate rule 'mAP > 50' is not"),
    (("fake1", "fake2"), ["fake1.yml", "typo.yml"], "typo.yml): gate rule 'mAp >= 50' names metric 'mAp'"),
    (("fake1", "fake2"), ["fake1.yml", "no_ref.yml"], "names reference 'teacher'; available: fake1, previous"),
    (("fake1", "fake2"), ["later.yml", "fake2.yml"], "names reference 'fake2'; available: (none)"),
    (("fake1", "fake2"), ["previous.yml", "fake2.yml"], "names reference 'previous'; available: (none)"),
    (("fake1", "fake2"), ["fake1.yml", "ungated.yml"], "stage 'fake2' (" ),
])
def test_bad_input_exits_2_before_any_folder_is_written(work, monkeypatch, capsys, names, configs, words):
    write_stage_config(work / "bad_gate.yml", gates=("mAP > 50",))
    write_stage_config(work / "typo.yml", gates=("mAp >= 50",))
    write_stage_config(work / "no_ref.yml", gates=("mAP >= teacher - 1",))
    write_stage_config(work / "previous.yml", gates=("mAP >= previous - 1",))  # the first stage has none
    write_stage_config(work / "ungated.yml", gates=())
    write_stage_config(work / "later.yml", gates=("mAP >= fake2",))  # a later stage is no reference
    configs = [str(work / c) for c in configs] if configs else None
    code = call_tool(monkeypatch, *pipeline_opts(work, names, configs))
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0]
    assert not (work / "out").exists() and CALLS == []


def test_report_has_a_row_per_stage_and_embeds_its_figures(work, monkeypatch):
    def fake_measure(stage, cfg, folder, latency=True):
        timed = stage.name != "fake2"  # one stage without a latency: "n/a", and no point in the plot
        return {"params": 1_500_000, "macs": 3_000_000, "size_bytes": 2_500_000,
                "latency_ms": 2.5 if timed else None, "notes": [] if timed else ["latency n/a: no exporter"]}

    monkeypatch.setattr(runner, "measure_stage", fake_measure)
    CALLS.clear()
    result = run_pipeline(plan_pipeline(load_config("", pipeline_opts(work))), measure=True)
    out = work / "out"
    assert result.report == str(out / "report.md") and result.status == "accepted"
    report = (out / "report.md").read_text()
    row = "| 1 | fake1 | accepted | 50.00 | 60.00 | 40.00 | 1.500 M | 3.000 M | 2.50 MB | 2.500 |"
    assert row in report and "| 2 | fake2 | accepted | 50.00 | 60.00 | 40.00 | 1.500 M | 3.000 M | 2.50 MB | n/a |" \
        in report
    assert "PASS: mAP >= 50" in report and "fake2: latency n/a: no exporter" in report
    for figure in ("accuracy_latency.png", "roc.png", "distances.png"):
        assert (out / "report_files" / figure).stat().st_size > 1000
        assert f"(report_files/{figure})" in report
    assert "(fake3/plots/Synthetic_worst_queries.png)" in report  # the last stage's rank lists
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 4 and "report_files/" not in page
    assert "<td>fake3</td>" in page and "PASS: mAP &gt;= 50" in page
    assert read_manifest(work)["report"]["html"] == str(out / "report.html")


def test_a_failed_rerun_leaves_no_report_of_the_previous_run(work):
    run_once(work)
    assert (work / "out" / "report.md").is_file() and (work / "out" / "report.html").is_file()
    write_stage_config(work / "fake2.yml", seed=99)  # the body raises DataError
    with pytest.raises(DataError):
        run_once(work)
    assert read_manifest(work)["status"] == "failed"
    assert not (work / "out" / "report.md").exists() and not (work / "out" / "report.html").exists()


def test_a_second_pipeline_into_the_same_output_dir_is_refused(work):
    os.makedirs(work / "out")
    holder = FolderLock(str(work / "out"), "compress").acquire()  # as a running pipeline holds it
    try:
        with pytest.raises(ConfigError, match=r"is in use by another run \(pid \d+, compress, started"):
            run_once(work)
        assert CALLS == [] and not (work / "out" / "manifest.json").exists()
    finally:
        holder.release()


def test_an_ungated_stage_is_refused_before_any_work_unless_allowed(work, monkeypatch, capsys):
    write_stage_config(work / "fake2.yml", gates=())
    assert call_tool(monkeypatch, "--skip-latency", *pipeline_opts(work)) == 2
    assert "has no TEST.GATES" in capsys.readouterr().err and CALLS == []
    manifest = run_once_allowing_ungated(work)
    assert [s["status"] for s in manifest["stages"]] == ["accepted", "ungated", "accepted"]
    headline = (work / "out" / "report.md").read_text().splitlines()[2]
    assert headline.startswith("Status: accepted with 1 UNGATED stage(s): fake2 had no TEST.GATES")


def run_once_allowing_ungated(work):
    CALLS.clear()
    run_pipeline(plan_pipeline(load_config("", [*pipeline_opts(work), "PIPELINE.ALLOW_UNGATED", "True"])),
                 measure=False)
    return read_manifest(work)


def test_previous_is_the_stage_before_and_a_stage_that_skips_its_verdict_fails(work, monkeypatch, capsys):
    write_stage_config(work / "fake2.yml", seed=1, gates=("mAP >= previous + 0.5",))  # 51 vs the stage before's 50
    manifest = run_once(work)
    gate = manifest["stages"][1]["gates"][0]
    assert gate["reference"] == "previous" and gate["reference_value"] == 50.0 and gate["passed"]
    write_stage_config(work / "fake3.yml", seed=98)
    assert call_tool(monkeypatch, "--skip-latency", *pipeline_opts(work)) == 1
    manifest = read_manifest(work)
    assert manifest["stages"][2]["status"] == "failed"
    assert "returned without handing its results to its verdict" in manifest["stages"][2]["error"]


def test_every_earlier_stage_is_a_reference_by_its_name(work):
    """How the demo gates distillation against its ``baseline`` stage (the student trained alone)."""
    write_stage_config(work / "fake3.yml", seed=2, gates=("mAP >= fake1 + 1.5", "mAP >= fake2 + 0.5"))
    write_stage_config(work / "fake2.yml", seed=1)
    manifest = run_once(work)
    first, second = manifest["stages"][2]["gates"][:2]
    assert (first["reference"], first["reference_value"], first["passed"]) == ("fake1", 50.0, True)
    assert (second["reference"], second["reference_value"], second["passed"]) == ("fake2", 51.0, True)
