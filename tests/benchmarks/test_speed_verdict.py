"""benchmarks/speed_verdict.py: which INT8 file of a run it times, how it counts verdicts, and bad input."""

from __future__ import annotations

import json
import sys

import pytest

from compressreid.export.conventions import get_convention
from compressreid.quant.speed import SpeedPolicy
from tiny_models import Sleeper

@pytest.fixture(scope="module")
def bench(import_benchmark):
    return import_benchmark("speed_verdict")


def test_the_int8_file_is_the_one_the_card_names_for_the_target_even_when_fp32_shipped(bench, tmp_path):
    card = {"model": "student_fp32.ort_portable.onnx", "target": {"target": "ort_portable"},
            "shipping": {"precision": "fp32", "int8_model": "student_int8.onnx"},
            "targets": [{"model": "student_int8.onnx", "target": {"target": "ort_portable"}},
                        {"model": "student_int8.openvino.onnx", "target": {"target": "openvino"}}]}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    assert bench.int8_file(str(tmp_path), "ort_portable") == str(tmp_path / "student_int8.onnx")
    assert bench.int8_file(str(tmp_path), "openvino") == str(tmp_path / "student_int8.openvino.onnx")
    with pytest.raises(bench.ConfigError, match="no target 'boxmot'"):
        bench.int8_file(str(tmp_path), "boxmot")


def test_verdicts_are_counted_over_the_repeats(bench):
    policy = SpeedPolicy((1,), 2, 2, 1, 1, "warn")
    rgb = get_convention("rgb255")
    slow = bench.verdicts(policy, Sleeper(10.0), Sleeper(0.0), (8, 4), rgb, rgb, 3)
    assert (slow["repeats"], slow["slower"], slow["level"], slow["faster"]) == (3, 3, 0, 0)
    assert slow["speedup_spread"][0] <= slow["speedup_median"] <= slow["speedup_spread"][1] < 1


@pytest.mark.parametrize("case", ["unknown_target", "stand_in_runtime", "no_onnx_files", "bad_card"])
def test_bad_input_is_one_line_and_exit_2(bench, tmp_path, monkeypatch, capsys, case):
    from compressreid.config import dump_config, get_cfg
    from compressreid.quant.targets.registry import QUANT_TARGETS

    dump_config(get_cfg(), str(tmp_path / "config.yaml"))
    card = {"model": "student_int8.onnx", "target": {"target": "ort_portable"}}
    (tmp_path / "model_card.json").write_text("{" if case == "bad_card" else json.dumps(card))
    target = {"unknown_target": "tensorrtx", "stand_in_runtime": "tensorrt"}.get(case, "ort_portable")
    monkeypatch.setattr(sys, "argv", ["speed_verdict.py", str(tmp_path), "--target", target])
    assert bench.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("speed_verdict.py: "), err
    words = {"unknown_target": f"unknown target 'tensorrtx'; valid: {', '.join(QUANT_TARGETS.names())}",
             "stand_in_runtime": "the run records no speed-up for it on this CPU",
             "no_onnx_files": "student_fp32.onnx", "bad_card": "Expecting"}[case]
    assert words in err[0]
