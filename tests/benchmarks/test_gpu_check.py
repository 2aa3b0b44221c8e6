"""benchmarks/gpu_check.py run the CPU way (--device cpu --tiny), so the prepared GPU check cannot rot: every step is
recorded, training, distillation, QAT and the torchrun job pass with real numbers, TensorRT is skipped with its
reason; plus the bookkeeping (a failed step does not stop the others) and the --full-size budget plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")
SCRIPT = os.path.join(BENCHMARKS, "gpu_check.py")
STEPS = ["teacher_amp", "distill", "qat", "ddp", "tensorrt", "full_size"]


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # the timeout only guards against a hang: about a minute on an idle 2-core machine
    result = subprocess.run([sys.executable, SCRIPT, "--device", "cpu", "--tiny", "--out", str(out)], cwd=str(out),
                            env=env, capture_output=True, text=True, timeout=900)
    report = out / "gpu_check.json"
    return out, result, json.loads(report.read_text()) if report.is_file() else None


@pytest.fixture
def bench(monkeypatch):
    """The script's helper modules, imported as the script imports them (from benchmarks/)."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    import _gpu_full_size
    import _gpu_runner

    return _gpu_runner, _gpu_full_size


def steps_by_name(report):
    return {step["name"]: step for step in report["steps"]}


def test_cpu_run_passes_and_records_every_step(cpu_check):
    out, result, report = cpu_check
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [step["name"] for step in report["steps"]] == STEPS
    for step in report["steps"]:
        assert step["status"] in ("ok", "skipped") and step["seconds"] >= 0
    assert report["passed"] is True and report["complete"] is True
    assert (report["options"]["device"], report["options"]["tiny"], report["options"]["ddp_procs"]) == ("cpu", True, 1)
    env = report["environment"]
    assert env["device_name"] and env["versions"]["torch"] == torch.__version__ and env["cpu"]["kind"]


def test_training_distillation_qat_and_ddp_pass_with_numbers(cpu_check):
    _, result, report = cpu_check
    assert result.returncode == 0, result.stderr[-3000:]
    steps = steps_by_name(report)
    for name in ("teacher_amp", "distill", "qat", "ddp"):
        assert steps[name]["status"] == "ok", steps[name]
    teacher, distill, qat, ddp = (steps[n]["metrics"] for n in ("teacher_amp", "distill", "qat", "ddp"))
    assert 0 < teacher["mAP"] <= 100 and teacher["amp_active"] is False  # AMP is a no-op on CPU, and says so
    assert any("no-op on CPU" in note for note in steps["teacher_amp"]["notes"])
    assert distill["steps_per_second"] > 0 and distill["teacher_mAP"] == pytest.approx(teacher["mAP"], abs=1e-3)
    assert 0 < qat["int8_mAP"] <= 100 and 0 < qat["fake_quant_mAP"] <= 100 and qat["fp32_mAP"] > 0
    assert qat["int8_minus_fake_quant_mAP"] == pytest.approx(qat["int8_mAP"] - qat["fake_quant_mAP"], abs=1e-3)
    assert qat["trt_unsupported_ops"] == 0 and qat["trt_qdq_not_symmetric_int8"] == 0
    assert os.path.isfile(qat["int8_file"])  # the file the tensorrt step builds on a GPU
    assert ddp["world_size"] == 1 and ddp["backend"] == "gloo" and ddp["all_reduce_ok"] is True and ddp["mAP"] > 0


def test_tensorrt_is_skipped_with_its_reason_and_full_size_is_off(cpu_check):
    _, _, report = cpu_check
    steps = steps_by_name(report)
    assert steps["tensorrt"]["status"] == "skipped" and "no CUDA device" in steps["tensorrt"]["reason"]
    assert steps["full_size"] == {**steps["full_size"], "status": "skipped", "reason": "off (--full-size)"}


def test_markdown_table_is_written_and_printed(cpu_check):
    out, result, _ = cpu_check
    table = (out / "gpu_check.md").read_text()
    assert table.startswith("# gpu_check: PASSED") and "| step | status | seconds |" in table
    for name in STEPS:
        assert f"| {name} |" in table
    assert "| tensorrt | skipped |" in table and "int8_mAP" in table
    assert "| step | status | seconds |" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_and_unknown_steps_are_bad_usage(bench, tmp_path, capsys):
    import gpu_check

    assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path / "a")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert gpu_check.main(["--device", "cpu", "--steps", "qat,warp", "--out", str(tmp_path / "b")]) == 2
    assert "unknown step(s) warp" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything is written


def test_a_failed_step_does_not_stop_the_independent_ones(bench):
    runner, _ = bench

    def fail(result):
        raise runner.StepError("exit 2: error: bad input (log: x)")

    steps = runner.Steps(echo=lambda line: None)
    steps.run("a", fail)
    steps.run("b", lambda r: None, needs=("a",))
    steps.run("c", lambda r: r.metrics.update(x=1.0))
    assert [(r.name, r.status) for r in steps.results] == [("a", "failed"), ("b", "skipped"), ("c", "ok")]
    assert steps.results[0].reason == "exit 2: error: bad input (log: x)"
    assert steps.results[1].reason == "needs step a (failed)" and not steps.passed


def test_tool_errors_and_logged_metrics_are_read_back(bench, tmp_path):
    runner, _ = bench
    log = ("12:00:00 INFO compressreid.engine.hooks: training throughput: 50.0 images/s (0.320 s/iteration over 9 "
           "measured iterations)\n12:00:01 INFO compressreid.evaluation.run: student on Synthetic: mAP 41.50  Rank-1 "
           "60.00  Rank-5 80.00\n12:00:01 INFO compressreid.evaluation.run: teacher on Synthetic: mAP 55.25  Rank-1 "
           "70.00  Rank-5 90.00\nerror: teacher 0: config not found\n")
    assert runner.error_line(log) == "error: teacher 0: config not found"
    assert runner.error_line("Traceback\n  File x\nRuntimeError: boom\n") == "RuntimeError: boom"
    metrics = runner.run_metrics(str(tmp_path), log)  # no metrics.json there: the log's numbers
    assert metrics == {"mAP": 41.5, "rank1": 60.0, "teacher": {"mAP": 55.25, "rank1": 70.0},
                       "train_images_per_second": 50.0, "train_seconds_per_iter": 0.32}


def test_full_size_budget_plan(bench):
    runner, full_size = bench
    teacher, student = (30.0, 0.1), (25.0, 0.2)  # (fixed seconds, seconds per iteration)
    t_iters, s_iters = full_size.plan_iterations(355.0, teacher, student)
    assert (t_iters, s_iters) == (1800, 600)  # 300 s of training: 60 % teacher, 40 % student
    assert t_iters * teacher[1] + s_iters * student[1] + teacher[0] + student[0] <= 355.0
    opts = dict(zip(*[iter(full_size.schedule(1800))] * 2))
    assert opts == {"SOLVER.MAX_EPOCH": "12", "SOLVER.ITERS_PER_EPOCH": "150", "SOLVER.WARMUP_ITERS": "150"}
    with pytest.raises(runner.StepError, match="raise --budget-s"):
        full_size.plan_iterations(60.0, teacher, student)


class FakeEngine:
    """Stands in for a TensorRT engine on a machine without one: the ONNX file in ONNX Runtime."""

    def __init__(self, trt, built):
        from compressreid.export.ort_model import OrtEmbedder

        self.embedder, self.max_batch = OrtEmbedder(built[0]), 32
        self.typing = built[1]

    def __call__(self, images):
        return self.embedder(images)

    def eval(self):
        return self


def test_tensorrt_step_wiring_with_a_stand_in_engine(cpu_check, bench, monkeypatch):
    """Everything of the tensorrt step but TensorRT and CUDA, on the CPU run's folders: which files it builds (the
    QAT file, the teacher's FP32 ONNX with the FP16 flag under TensorRT 10), the evaluation, parity and speed-ups."""
    out, result, report = cpu_check
    assert result.returncode == 0, result.stderr[-3000:]
    runner, _ = bench
    import _gpu_steps
    import _gpu_trt

    built = []

    def build_engine(trt, path, chw, fp16_flag=False):
        built.append((os.path.basename(path), tuple(chw), fp16_flag))
        return (path, "weak" if fp16_flag else "strong"), {"build_seconds": 0.0}

    monkeypatch.setitem(sys.modules, "tensorrt", type(sys)("tensorrt"))
    monkeypatch.setattr(sys.modules["tensorrt"], "__version__", "10.16.1.11", raising=False)
    monkeypatch.setattr(_gpu_trt, "build_engine", build_engine)
    monkeypatch.setattr(_gpu_trt, "TrtEmbedder", FakeEngine)
    monkeypatch.setattr(_gpu_trt, "measure_latency", lambda engine, chw, batch: {"ms_p50": batch * 0.5})
    options = report["options"]
    ctx = _gpu_steps.CheckContext("cuda", True, options["work"], options["data_root"])
    steps = runner.Steps(echo=lambda line: None)
    steps.results = [runner.StepResult(s["name"], s["status"], 0.0) for s in report["steps"][:4]]
    step = runner.StepResult("tensorrt", "ok", 0.0)
    _gpu_trt.tensorrt_step(ctx, steps, step)
    m = step.metrics
    qat = steps_by_name(report)["qat"]["metrics"]
    assert built == [("student_int8.onnx", (3, 32, 16), False), ("teacher_fp32.onnx", (3, 32, 16), True)]
    assert m["int8_file"] == qat["int8_file"] and m["input_chw"] == [3, 32, 16]
    assert m["fp32_onnx_mAP"] == pytest.approx(qat["fp32_mAP"], abs=1e-3)  # the same FP32 file, the same sets
    assert m["qdq_int8_mAP"] == pytest.approx(qat["int8_mAP"], abs=1e-3)
    assert 0 < m["trt_int8_mAP"] <= 100 and -1 <= m["cosine_min"] <= m["cosine_mean"] <= 1
    teacher = steps_by_name(report)["teacher_amp"]["metrics"]
    assert m["teacher_fp16_mAP"] == pytest.approx(teacher["mAP"], abs=0.5)  # FP32 ONNX stands in for the FP16 engine
    assert "BuilderFlag.FP16" in m["teacher_fp16_engine"]["fp16_mode"]
    assert m["latency_ms"] == {"student_int8_b1": 0.5, "student_int8_b32": 16.0, "teacher_fp16_b1": 0.5,
                               "teacher_fp16_b32": 16.0}
    assert m["speedup_b1"] == m["speedup_b32"] == 1.0


def test_gpu_and_full_size_command_lines_are_valid_configs(bench, monkeypatch, tmp_path):
    """The GPU-sized and --full-size runs cannot execute here: their command lines are captured and each loaded as
    its tool loads it (unknown keys and out-of-range budgets are ConfigErrors)."""
    runner, full_size = bench
    import _gpu_steps
    from compressreid.config import load_config

    commands = []

    def run_command(command, log_path, env, timeout_s):
        commands.append(list(command))
        if command[-2] == "--out":  # the collective helper's report
            (tmp_path / "ddp.json").write_text('{"backend": "nccl", "world_size": 1, "all_reduce_ok": true}')
            os.replace(tmp_path / "ddp.json", command[-1])
        return "INFO x: training throughput: 320.0 images/s (0.200 s/iteration over 15 measured iterations)\n"

    monkeypatch.setattr(_gpu_steps, "run_command", run_command)
    monkeypatch.setattr(full_size, "run_command", run_command)
    ctx = _gpu_steps.CheckContext("cuda", False, str(tmp_path / "work"), str(tmp_path / "data"))
    os.makedirs(ctx.work)
    for step in (_gpu_steps.teacher_step, _gpu_steps.distill_step, _gpu_steps.qat_step, _gpu_steps.ddp_step):
        step(ctx, runner.StepResult(step.__name__, "ok", 0.0))
    _gpu_steps.ptq_for_tensorrt(ctx)
    planned = runner.StepResult("full_size", "ok", 0.0)
    full_size.full_size_step(ctx, 480.0, str(tmp_path), planned)
    configs = {}
    for command in commands:
        if "--config-file" in command:  # every tool run; the collective helper takes no config
            at, out = command.index("--config-file"), command[command.index("OUTPUT_DIR") + 1]
            configs[os.path.relpath(out, ctx.work)] = load_config(command[at + 1], command[at + 2:])
    assert sorted(configs) == ["ddp", "distill", "full_size/distill", "full_size/probe_student",
                               "full_size/probe_teacher", "full_size/teacher", "ptq", "qat", "teacher"]
    ddp = next(c for c in commands if c[-1] == os.path.join(ctx.work, "ddp"))
    assert ddp[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    assert all(c.MODEL.DEVICE == "cuda" for c in configs.values())
    assert configs["qat"].QUANT.METHOD == "qat" and tuple(configs["qat"].QUANT.TARGETS) == ("tensorrt",)
    assert configs["qat"].QUANT.QAT.ITERS == 200 and configs["ptq"].QUANT.METHOD == "ptq"
    assert configs["teacher"].SOLVER.AMP.ENABLED and configs["teacher"].MODEL.BACKBONE.WITH_IBN
    assert configs["full_size/probe_student"].INPUT.SIZE_TRAIN == [256, 128]
    assert configs["full_size/teacher"].DATASETS.SYNTHETIC.SIZE == [256, 128]
    # the probes took (almost) no time here: 480 s of training at 0.2 s per iteration, 60 % teacher, 40 % student
    t_iters, s_iters = planned.metrics["teacher_iters"], planned.metrics["student_iters"]
    assert 1430 <= t_iters <= 1440 and 950 <= s_iters <= 960
    for name, iters in (("teacher", t_iters), ("distill", s_iters)):  # the recipe's 12 epochs over them
        solver = configs[f"full_size/{name}"].SOLVER
        assert solver.MAX_EPOCH == 12 and iters - 12 < solver.MAX_EPOCH * solver.ITERS_PER_EPOCH <= iters
