"""benchmarks/summarize_quant.py: the per-target table names the weight rounding each file shipped with."""

from __future__ import annotations

import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")

PTQ = {"method": "ptq", "refinement": {"weight_rounding": "auto", "gptq_weight_bits": [7]}}


@pytest.fixture
def summarize(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import summarize_quant

    return summarize_quant


@pytest.mark.parametrize("bits, fallback, accepted, label", [
    (7, {}, True, ", GPTQ"),
    (8, {}, True, ", nearest"),
    (7, {"weight_rounding": {"shipped": "nearest"}}, True, "; GPTQ file failed a gate, nearest shipped"),
    (7, {"weight_rounding": {"shipped": "nearest"}}, False, "; GPTQ file failed a gate, nearest judged too"),
    (7, {"weight_rounding": {"shipped": "gptq"}}, True, ", GPTQ (the other rounding also failed)"),
])
def test_rounding_label_follows_the_format_and_what_shipped(summarize, bits, fallback, accepted, label):
    assert summarize.rounding_label(PTQ, {"weight_bits": bits}, fallback, accepted) == label


@pytest.mark.parametrize("rounding,label", [("gptq", ", GPTQ"), ("gptaq", ", GPTAQ"), ("nearest", ", nearest")])
def test_a_rounding_asked_for_by_name_labels_every_format(summarize, rounding, label):
    quantization = {"method": "ptq", "refinement": {"weight_rounding": rounding}}  # no gptq_weight_bits: not auto
    assert summarize.rounding_label(quantization, {"weight_bits": 8}, {}, True) == label


def test_no_rounding_label_for_qat_or_runs_without_a_card(summarize):
    assert summarize.rounding_label({"method": "qat", "refinement": {}}, {"weight_bits": 7}, {}, True) == ""
    assert summarize.rounding_label(PTQ, {}, {}, True) == ""


def test_a_target_not_run_here_has_no_speed_up_and_the_gap_is_shown(summarize):
    assert summarize.speedup_cell(None) == "-" and summarize.speedup_cell(2.004) == "2.00×"
    parity = {"runtime_parity": {"cosine_min": 0.98, "cosine_mean": 0.99, "fp32_gap": -0.0024}}
    assert summarize.runtime_cell(parity) == "0.980 / 0.9900 (FP32 gap -0.0024)"
    assert summarize.runtime_cell({}) == "-"


def test_rank1_cell_shows_the_change_and_the_queries_that_flipped(summarize):
    assert summarize.rank1_cell({"rank1": 58.59, "rank1_lost": 25.0, "rank1_gained": 17.0}, 60.61) == "-2.02 (25 / 17)"
    assert summarize.rank1_cell({"rank1": 61.0}, 60.0) == "+1.00"  # a run from before the per-query comparison
    assert summarize.rank1_cell({}, 60.0) == "-"


def test_a_qat_file_shows_what_its_fake_quant_rules_read(summarize):
    assert summarize.fake_cell(None, {"mAP": 32.83}) == ""  # PTQ
    assert summarize.fake_cell(32.95, None) == " (fake-quant 32.95)"  # ONNX Runtime: the file as it runs
    assert summarize.fake_cell(32.95, {"dataset": "Synthetic", "mAP": 32.83}) == \
        " (fake-quant 32.95; the file's Q/DQ semantics 32.83)"  # OpenVINO: the rules read the file's semantics


def test_the_map_change_carries_its_paired_standard_error_where_measured(summarize):
    assert summarize.map_cell({"mAP": 46.32, "mAP_drop_se": 0.314}, 47.36) == "46.32 (-1.04 ± 0.31)"
    assert summarize.map_cell({"mAP": 46.32}, 47.36) == "46.32 (-1.04)"  # a run from before the paired comparison


def test_a_target_that_shipped_its_fp32_model_says_so_beside_the_int8_numbers(summarize):
    assert summarize.accepted_cell({"accepted": True, "file": "student_int8.onnx", "shipped": "student_int8.onnx"}) \
        == "yes"
    assert summarize.accepted_cell({"accepted": True, "file": "student_int8.onnx",
                                    "shipped": "student_fp32.ort_portable.onnx"}) \
        == "yes; ships FP32 (student_fp32.ort_portable.onnx): INT8 slower"
    assert summarize.accepted_cell({"accepted": False, "file": "student_int8.rejected.onnx"}) == "**rejected**"
