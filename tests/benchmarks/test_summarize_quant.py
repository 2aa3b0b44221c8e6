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


def test_no_rounding_label_for_qat_or_runs_without_a_card(summarize):
    assert summarize.rounding_label({"method": "qat", "refinement": {}}, {"weight_bits": 7}, {}, True) == ""
    assert summarize.rounding_label(PTQ, {}, {}, True) == ""
