"""benchmarks/pair_selection.py on tiny settings: the speed phase (two tiny entries at 32x16, one that cannot be built,
reported and skipped, and reuse on a second run), the timing-stability verdict and the speed gate on synthetic
samples, the Pareto selection on a fake table, and the accuracy phase's plan and resume logic (no training)."""

from __future__ import annotations

import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")


@pytest.fixture
def bench(monkeypatch):
    """The script's helper modules, imported as the script imports them (from benchmarks/)."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    import _pair_accuracy
    import _pair_ladder
    import _pair_speed
    import _pair_table
    import _pair_timing

    return type("Bench", (), {"accuracy": _pair_accuracy, "ladder": _pair_ladder, "speed": _pair_speed,
                              "table": _pair_table, "timing": _pair_timing})


def samples(round_ms, calls=3):
    """Interleaved-timing samples of one cell: ``calls`` calls of ``ms`` per round, CPU time = wall time (1 thread)."""
    return {"wall": [[ms] * calls for ms in round_ms], "cpu": [[ms] * calls for ms in round_ms]}


# ---- the speed phase ---------------------------------------------------------------------------------------------
def test_speed_phase_measures_tiny_entries_and_skips_one_that_cannot_be_built(bench, tmp_path):
    settings = bench.speed.SpeedSettings(size=(32, 16), calls=(2, 1), rounds=3, threads=1, runtimes=("onnxruntime",),
                                         teacher_config="configs/synthetic/bot_r18.yml",
                                         teacher_opts=("MODEL.BACKBONE.WIDTH", "0.125"))
    entries = [bench.ladder.parse_entry(n) for n in ("r18_w0.125", "osnet_w0", "r18ibn_w0.125")]
    lines = []
    cwd = os.getcwd()
    os.chdir(REPO)  # configs are named relative to the repository, as the script is run
    try:
        records = bench.speed.speed_phase(entries, settings, str(tmp_path), log=lines.append)
        again = bench.speed.speed_phase(entries[:1], settings, str(tmp_path), log=lines.append)
    finally:
        os.chdir(cwd)
    ok, bad, ibn = records
    assert ok["status"] == "ok" and ibn["status"] == "ok"
    assert bad["status"] == "failed" and bad["stage"] == "build" and "WIDTH must be positive" in bad["error"]
    assert any("osnet_w0" in line and "SKIPPED" in line for line in lines)
    assert lines[0].startswith("CPU: ") and "kind:" in lines[0]  # CPU features printed first
    for record in (ok, ibn):
        speed = record["speedup"]["b32"]
        assert speed["speedup_vs_teacher_b32"] > 0 and speed["timing_rounds_b32"] == 3
        assert speed["speedup_vs_teacher_b32_low"] <= speed["speedup_vs_teacher_b32"]
        assert record["best_runtime"]["b1"] == {"teacher FP32": "onnxruntime", "student INT8": "onnxruntime"}
        assert len(record["samples"]["student INT8 | onnxruntime | 32"]["wall"]) == 3
    kind = bench.speed.kind_slug(ok["machine"]["kind"])
    assert sorted(os.listdir(tmp_path / "speed" / kind)) == ["osnet_w0.json", "r18_w0.125.json", "r18ibn_w0.125.json"]
    assert again[0]["seconds"] == ok["seconds"] and any("measured before" in line for line in lines)


def test_entry_names_and_scaled_overrides(bench):
    entry = bench.ladder.parse_entry("r18ibn_w0.5_p0.3")
    assert (entry.arch, entry.width, entry.prune, entry.base.name) == ("r18ibn", 0.5, 0.3, "r18ibn_w0.5")
    opts = dict(zip(*[iter(entry.model_opts(0.25))] * 2))
    assert opts["MODEL.BACKBONE.WIDTH"] == "0.125" and opts["MODEL.BACKBONE.WITH_IBN"] == "True"
    assert opts["MODEL.BACKBONE.FEAT_DIM"] == "64"  # 8 base channels x 8
    assert entry.round_to(0.25) == 2 and entry.round_to(1.0) == 8
    with pytest.raises(Exception, match="not <arch>_w<width>"):
        bench.ladder.parse_entry("resnet18_half")


# ---- stability and the speed gate ----------------------------------------------------------------------------------
def test_steady_paired_timing_is_stable(bench):
    teacher, student = samples([100, 102, 99, 101, 100]), samples([10, 10.1, 9.9, 10, 10])
    ratios = bench.timing.paired_ratios(teacher, student)
    verdict = bench.timing.assess(ratios, [teacher, student], 1)
    assert verdict.stable and verdict.ratio_cv < 0.02 and verdict.median_over_min == pytest.approx(1.0, abs=0.02)
    assert verdict.cpu_share == pytest.approx(1.0)


def test_a_burst_on_the_teacher_makes_timing_unstable(bench):
    # a neighbour's load lands on two of the teacher's rounds: the speed-up looks larger than it is
    teacher, student = samples([100, 180, 99, 170, 100]), samples([10, 10, 10, 10, 10])
    verdict = bench.timing.assess(bench.timing.paired_ratios(teacher, student), [teacher, student], 1)
    assert not verdict.stable and any("CV" in reason for reason in verdict.reasons)


def test_slow_calls_within_rounds_and_too_few_rounds_are_unstable(bench):
    teacher, student = samples([100, 100, 100]), samples([10, 10, 10])
    teacher["wall"] = teacher["cpu"] = [[100, 200, 210]] * 3  # rounds agree, but most calls take twice the best
    verdict = bench.timing.assess(bench.timing.paired_ratios(teacher, student), [teacher, student], 1)
    assert not verdict.stable and "fastest call" in " ".join(verdict.reasons)
    few = bench.timing.assess([10.0, 10.0], [samples([1, 1]), samples([0.1, 0.1])], 1)
    assert not few.stable and "round(s)" in few.reasons[0]


def test_a_runtime_starved_of_cpu_time_is_unstable_even_when_rounds_agree(bench):
    # other jobs hold the cores: each call gets a third of its 2 threads' time, every round alike
    teacher, student = samples([300, 301, 299, 300]), samples([30, 30, 30, 30])
    for cell in (teacher, student):
        cell["cpu"] = [[2 * ms / 3 for ms in row] for row in cell["wall"]]
    verdict = bench.timing.assess(bench.timing.paired_ratios(teacher, student), [teacher, student], 2)
    assert verdict.ratio_cv < 0.01 and verdict.cpu_share == pytest.approx(1 / 3, abs=1e-3)
    assert not verdict.stable and "other jobs hold the cores" in verdict.reasons[0]


def test_speed_gate_passes_stable_timing_and_fails_unstable_timing_with_a_message(bench):
    from compressreid.errors import ConfigError, GateFailed

    student = samples([10, 10, 10, 10, 10])
    steady = bench.timing.speedup_metrics(samples([120, 121, 119, 120, 122]), student, 32, 1)
    decisions = bench.timing.judge_speed(["speedup_vs_teacher_b32_low >= 10"], steady)
    assert all(d.passed for d in decisions) and any(d.metric == "timing_ratio_cv_b32" for d in decisions)
    # the same median speed-up, but two teacher rounds slowed down by other jobs: not decided, not passed
    lucky = bench.timing.speedup_metrics(samples([90, 200, 95, 190, 120]), student, 32, 1)
    assert lucky["speedup_vs_teacher_b32"] >= 10
    with pytest.raises(GateFailed, match="UNSTABLE") as failure:
        bench.timing.judge_speed(["speedup_vs_teacher_b32 >= 10"], lucky)
    assert any(d.metric == "speedup_vs_teacher_b32" and d.passed for d in failure.value.decisions)
    with pytest.raises(GateFailed, match="speedup_vs_teacher_b32_low >= 13"):
        bench.timing.judge_speed(["speedup_vs_teacher_b32_low >= 13"], steady)
    with pytest.raises(ConfigError, match="speedup_vs_teacher_b8"):
        bench.timing.judge_speed(["speedup_vs_teacher_b8 >= 10"], steady)


# ---- the table -----------------------------------------------------------------------------------------------------
def fake_row(bench, entry, speedup, share, seeds=2, stable=True, accepted=True):
    row = {"entry": entry, "speedup_b32": speedup, "stable_b32": stable, "share": share, "share_min": share - 0.01,
           "seeds": seeds, "int8_all_accepted": accepted, "teacher_mAP": 76.0, "int8_mAP": 76.0 * share,
           "int8_mAP_std": 0.5}
    return bench.table.judge_row(row, bench.table.Targets())


def test_pareto_choice_takes_the_pair_with_most_room_on_both_targets(bench):
    rows = [fake_row(bench, "r18_w1.0", 6.5, 1.03), fake_row(bench, "r18_w0.75", 10.9, 1.00),
            fake_row(bench, "r18_w0.5", 19.0, 0.96), fake_row(bench, "mnv3s_w1.0", 40.0, 0.70),
            fake_row(bench, "r18ibn_w0.5", 17.0, 0.94)]
    choice = bench.table.choose(rows, bench.table.Targets())
    assert choice.frontier == ["mnv3s_w1.0", "r18_w0.5", "r18_w0.75", "r18_w1.0"]  # r18ibn_w0.5 is dominated
    # worst-case margins min(speed-up / 10, share / 0.95): r18_w0.75 min(1.09, 1.053) = 1.053 beats r18_w0.5
    # min(1.9, 1.011) = 1.011, whose 96% would leave one point of mAP between it and a failed accuracy gate
    assert choice.chosen == "r18_w0.75" and "chosen: r18_w0.75" in choice.verdict[0]
    text = bench.table.markdown(rows, choice, bench.table.Targets(), "x86-64 AVX2 (no VNNI)", [32])
    assert "**★ r18_w0.75**" in text and "◆ r18_w0.5" in text and "| r18ibn_w0.5 |" in text


def test_no_pair_meets_both_then_the_frontier_says_by_how_much(bench, tmp_path):
    rows = [fake_row(bench, "r18_w1.0", 6.5, 1.03), fake_row(bench, "r18_w0.5", 19.0, 0.90),
            fake_row(bench, "r18_w0.75", 12.0, 0.99, stable=False), fake_row(bench, "osnet_w1.0", 14.0, 0.97, seeds=1)]
    choice = bench.table.choose(rows, bench.table.Targets())
    assert choice.chosen is None and choice.verdict[0] == "no entry meets both targets"
    text = "\n".join(choice.verdict)
    assert "r18_w0.75, 12.0x" in text and "timing was unstable" in text  # fastest accurate entry, but unstable
    assert "r18_w0.5, 90.0%" in text and "3.80 mAP points" in text  # (0.95 - 0.90) x 76
    assert "UNSTABLE at batch 32" in text and "fewer than 2 seeds" in text and "osnet_w1.0" in text
    png = bench.table.plot(rows, choice, bench.table.Targets(), "test", str(tmp_path / "pareto.png"))
    assert os.path.getsize(png) > 1000


def test_table_rows_from_stored_speed_and_seed_folders(bench, tmp_path):
    record = {"entry": "r18_w0.5", "status": "ok", "machine": {"kind": "k"}, "mac_ratio": 0.127,
              "settings": {"size": [256, 128]}, "best_runtime": {"b32": {"student INT8": "openvino-static"}},
              "speedup": {"b32": {"speedup_vs_teacher_b32": 18.0, "speedup_vs_teacher_b32_low": 17.0,
                                  "timing_ratio_cv_b32": 0.03, "timing_stable_b32": 1.0}}}
    seeds = [{"seed": s, "share": v / 76.0, "int8_mAP": v, "teacher_mAP": 76.0, "fp32_mAP": v + 0.1,
              "int8_status": "accepted"} for s, v in ((0, 73.0), (1, 74.0))]
    rows = bench.table.build_rows(["r18_w0.5", "r18_w0.75"], {"r18_w0.5": record}, {"r18_w0.5": seeds},
                                  {"r18_w0.5": {"synthetic_mac_ratio": 0.147}}, bench.table.Targets(), [32])
    assert rows[0]["meets"] and rows[0]["seeds"] == 2 and rows[0]["int8_mAP"] == pytest.approx(73.5)
    assert rows[0]["synthetic_mac_ratio"] == 0.147 and rows[0]["runtime_b32"] == "openvino-static"
    assert rows[1]["speed_note"] == "not measured" and not rows[1]["meets"]


# ---- the accuracy phase (plan and resume; no training) -------------------------------------------------------------
def write_status(folder, status, checkpoint=False):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "status.json"), "w", encoding="utf-8") as handle:
        json.dump({"status": status}, handle)
    if status in ("accepted", "rejected"):
        with open(os.path.join(folder, "metrics.json"), "w", encoding="utf-8") as handle:
            json.dump({"mAP": 70.0, "teacher": {"mAP": 76.0}, "status": status}, handle)
    if checkpoint:
        open(os.path.join(folder, "last_checkpoint.pth"), "wb").close()


def test_accuracy_plan_shares_the_distillation_and_skips_finished_steps(bench, tmp_path):
    acc = bench.accuracy
    settings = acc.AccuracySettings(teachers=["t/s0", "t/s1"], seeds=[0, 1])
    pruned = bench.ladder.parse_entry("r18ibn_w1.0_p0.5")
    steps = acc.entry_steps(pruned, 1, str(tmp_path), settings)
    assert [s.tool for s in steps] == ["distill", "prune", "quantize"]
    assert steps[0].folder == acc.run_folder(str(tmp_path), "r18ibn_w1.0", 1, "distill")  # the base entry's run
    args = steps[0].args
    assert args[args.index("DISTILL.TEACHERS.CONFIGS") + 1] == "('t/s1',)" and args[args.index("SEED") + 1] == "1"
    assert args[args.index("MODEL.BACKBONE.WIDTH") + 1] == "0.25"
    assert steps[1].args[steps[1].args.index("PRUNE.ROUND_TO") + 1] == "2"
    assert steps[2].args[steps[2].args.index("QUANT.SOURCE") + 1] == steps[1].folder
    write_status(steps[0].folder, "accepted")
    write_status(steps[1].folder, "interrupted", checkpoint=True)
    assert [s.state() for s in steps] == ["done", "run", "run"]  # only distillation resumes
    write_status(steps[0].folder, "interrupted", checkpoint=True)
    assert steps[0].state() == "resume" and steps[0].command("py", resume=True)[2] == "--resume"
    lines = []
    outcomes = acc.accuracy_phase([pruned, bench.ladder.parse_entry("osnet_w0")], settings, str(tmp_path),
                                  dry_run=True, log=lines.append)
    assert sum("would run" in line for line in lines) == 6 and "(resume)" in "\n".join(lines)
    assert outcomes["osnet_w0"][0].startswith("skipped: ConfigError")  # cannot be built: reported, the rest goes on


def test_collect_reads_teacher_fp32_and_int8(bench, tmp_path):
    acc = bench.accuracy
    entry = bench.ladder.parse_entry("r18_w0.5")
    write_status(acc.run_folder(str(tmp_path), "r18_w0.5", 0, "distill"), "accepted")
    write_status(acc.run_folder(str(tmp_path), "r18_w0.5", 0, "quantize"), "rejected")
    row = acc.collect(entry, 0, str(tmp_path))
    assert row["teacher_mAP"] == 76.0 and row["int8_status"] == "rejected"
    assert row["share"] == pytest.approx(70.0 / 76.0)
    other = bench.ladder.parse_entry("r18_w0.75")  # distillation rejected: no INT8 run, the reason is reported
    write_status(acc.run_folder(str(tmp_path), "r18_w0.75", 0, "distill"), "rejected")
    assert acc.collect(other, 0, str(tmp_path))["int8_status"] == "distill rejected (FP32 mAP 70.0)"
    assert acc.collect(other, 1, str(tmp_path))["int8_status"] == "missing"


# ---- the recipe ----------------------------------------------------------------------------------------------------
def test_gate_refuses_a_rule_on_an_unmeasured_batch_before_any_work(monkeypatch, tmp_path):
    from compressreid.cli import run_tool

    monkeypatch.syspath_prepend(BENCHMARKS)
    monkeypatch.chdir(REPO)
    import pair_selection

    out = tmp_path / "gate"
    code = run_tool(lambda: pair_selection.main(["gate", "--config-file", "configs/synthetic/pair_speed.yml",
                                                 "TEST.GATES", '("speedup_vs_teacher_b8 >= 10",)', "OUTPUT_DIR",
                                                 str(out)]))
    assert code == 2 and not out.exists()


def test_recipe_configs_describe_one_pair_at_both_scales(monkeypatch):
    from compressreid.config import load_config

    monkeypatch.chdir(REPO)
    synthetic = load_config("configs/synthetic/pair_distill.yml").MODEL.BACKBONE
    for path in ("configs/synthetic/pair_speed.yml", "configs/Market1501/pair_distill.yml",
                 "configs/Market1501/pair_speed.yml"):
        deploy = load_config(path).MODEL.BACKBONE
        assert (deploy.NAME, deploy.DEPTH, deploy.WITH_IBN) == (synthetic.NAME, synthetic.DEPTH, synthetic.WITH_IBN)
        assert synthetic.WIDTH == pytest.approx(0.25 * deploy.WIDTH), path  # the teacher's own 1/4
    for path in ("configs/synthetic/pair_quant.yml", "configs/Market1501/pair_quant.yml"):
        gates = load_config(path).TEST.GATES
        assert "mAP >= 0.95 * teacher" in gates and "mAP >= fp32 - 0.5" in gates
    assert load_config("configs/synthetic/pair_speed.yml").TEST.GATES == ["speedup_vs_teacher_b32_low >= 10"]
