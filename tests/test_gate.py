"""Gate rules (parse, check on every test set, validate before the work, raise), verdicts, and the run folder that
records their decisions."""

import json
import math

import pytest

from compressreid.config import get_cfg, load_config
from compressreid.engine.run_dir import METRICS_FILE, STATUS_FILE, RunDirectory
from compressreid.errors import ConfigError, DataError, GateFailed
from compressreid.engine.verdict import Verdict
from compressreid.gates import (GateDecision, GateRule, GateSet, GateSpec, Judged, Measurement, check_gates,
                               raise_if_failed, status_of)

# -- parsing ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, metric, op, reference, factor, offset",
    [
        ("mAP >= 50", "mAP", ">=", None, 0.0, 50.0),
        ("mAP>=50.25", "mAP", ">=", None, 0.0, 50.25),
        ("  cosine_min >= 0.98  ", "cosine_min", ">=", None, 0.0, 0.98),
        ("latency_ms <= 12.5", "latency_ms", "<=", None, 0.0, 12.5),
        ("mAP >= -1e-3", "mAP", ">=", None, 0.0, -0.001),
        ("mAP >= .5", "mAP", ">=", None, 0.0, 0.5),
        ("mAP >= previous", "mAP", ">=", "previous", 1.0, 0.0),
        ("mAP >= previous - 0.5", "mAP", ">=", "previous", 1.0, -0.5),
        ("mAP >= previous-0.5", "mAP", ">=", "previous", 1.0, -0.5),
        ("rank1 >= teacher + 2", "rank1", ">=", "teacher", 1.0, 2.0),
        ("rank1 >= 0.9 * teacher", "rank1", ">=", "teacher", 0.9, 0.0),
        ("rank1 >= 0.9*teacher", "rank1", ">=", "teacher", 0.9, 0.0),
        ("size_mb <= 0.25 * reference", "size_mb", "<=", "reference", 0.25, 0.0),
        ("rank-1 >= 90", "rank-1", ">=", None, 0.0, 90.0),
        ("tpr@fpr=1e-3 >= 0.5", "tpr@fpr=1e-3", ">=", None, 0.0, 0.5),
    ],
)
def test_parse(text, metric, op, reference, factor, offset):
    rule = GateRule.parse(text)
    assert (rule.metric, rule.op, rule.reference) == (metric, op, reference)
    assert rule.factor == factor
    assert rule.offset == offset
    assert rule.text == text


@pytest.mark.parametrize(
    "text",
    ["mAP > 50", "mAP == 50", "mAP >=", ">= 50", "mAP => 50", "mAP >= 50 points", "mAP >= 0.9 * teacher - 1",
     "mAP >= teacher * 0.9", "mAP >= previous -", "50 >= mAP", "", "mAP"],
)
def test_malformed_rule_is_a_config_error(text):
    with pytest.raises(ConfigError, match="gate rule"):
        GateRule.parse(text)


# -- checking ---------------------------------------------------------------------------------------------------


def test_absolute_rules_pass_and_fail():
    decisions = check_gates(["mAP >= 50", "rank1 >= 80", "latency_ms <= 10"],
                            {"mAP": 50.0, "rank1": 79.99, "latency_ms": 10.5})
    assert [d.passed for d in decisions] == [True, False, False]  # the bound itself passes
    assert [d.threshold for d in decisions] == [50.0, 80.0, 10.0]
    assert [d.value for d in decisions] == [50.0, 79.99, 10.5]
    assert all(d.reference is None and d.reference_value is None for d in decisions)


def test_drop_rule_records_exact_threshold():
    decisions = check_gates(
        ["mAP >= previous - 0.5", "rank1 >= previous - 0.5"],
        {"mAP": 79.5, "rank1": 89.25},
        {"previous": {"mAP": 80.0, "rank1": 90.0}},
    )
    d_map, d_rank = decisions
    assert d_map.threshold == 79.5 and d_map.passed  # exactly at the allowed drop
    assert d_map.reference == "previous" and d_map.reference_value == 80.0
    assert d_rank.threshold == 89.5 and not d_rank.passed
    assert d_rank.value == 89.25


def test_gain_rule():
    (decision,) = check_gates(["mAP >= teacher + 2"], {"mAP": 71.0}, {"teacher": {"mAP": 70.0}})
    assert decision.threshold == 72.0 and not decision.passed


def test_fraction_rule_records_exact_threshold():
    decisions = check_gates(
        ["rank1 >= 0.75 * teacher", "mAP >= 0.75 * teacher"],
        {"rank1": 60.0, "mAP": 59.0},
        {"teacher": {"rank1": 80.0, "mAP": 80.0}},
    )
    assert [d.threshold for d in decisions] == [60.0, 60.0]
    assert [d.passed for d in decisions] == [True, False]
    assert decisions[0].reference_value == 80.0


def test_less_equal_relative_rule():
    decisions = check_gates(["size_mb <= 0.5 * teacher", "latency_ms <= teacher - 1"],
                            {"size_mb": 25.0, "latency_ms": 9.5}, {"teacher": {"size_mb": 50.0, "latency_ms": 10.0}})
    assert [(d.threshold, d.passed) for d in decisions] == [(25.0, True), (9.0, False)]


def test_bare_reference_rule():
    (decision,) = check_gates(["cosine_min >= reference"], {"cosine_min": 0.97}, {"reference": {"cosine_min": 0.98}})
    assert decision.threshold == 0.98 and not decision.passed


def test_one_decision_per_rule_in_order_and_fields():
    rules = ["mAP >= 1", "mAP <= 100", "rank1 >= previous"]
    decisions = check_gates(rules, {"mAP": 50, "rank1": 70}, {"previous": {"rank1": 70}})
    assert [d.rule for d in decisions] == rules
    assert [d.metric for d in decisions] == ["mAP", "mAP", "rank1"]
    assert [d.op for d in decisions] == [">=", "<=", ">="]
    assert all(d.passed for d in decisions)
    assert isinstance(decisions[0].value, float)  # ints from metrics are recorded as floats
    as_dict = decisions[2].to_dict()
    assert as_dict == {"rule": "rank1 >= previous", "metric": "rank1", "op": ">=", "value": 70.0,
                       "threshold": 70.0, "reference": "previous", "reference_value": 70.0, "passed": True,
                       "scope": None, "dataset": None, "measured_on": None}
    json.dumps(as_dict)  # serialisable as recorded in metrics.json


@pytest.mark.parametrize("rule", ["mAP >= 0", "mAP <= 100", "mAP >= previous - 100", "mAP <= previous + 100"])
def test_nan_value_fails_every_rule(rule):
    (decision,) = check_gates([rule], {"mAP": float("nan")}, {"previous": {"mAP": 50.0}})
    assert decision.passed is False
    assert math.isnan(decision.value)


def test_nan_reference_fails():
    (decision,) = check_gates(["mAP >= previous - 1"], {"mAP": 50.0}, {"previous": {"mAP": float("nan")}})
    assert decision.passed is False


def test_no_rules_no_decisions():
    assert check_gates([], {"mAP": 1.0}) == []


def test_unknown_metric_is_a_config_error_listing_available():
    with pytest.raises(ConfigError, match=r"'rank5'.*available: mAP, rank1"):
        check_gates(["rank5 >= 1"], {"rank1": 1.0, "mAP": 2.0})


def test_metric_missing_from_reference_is_a_config_error():
    with pytest.raises(ConfigError, match="'teacher'"):
        check_gates(["mAP >= teacher"], {"mAP": 1.0}, {"teacher": {"rank1": 1.0}})


def test_unknown_reference_is_a_config_error_listing_available():
    with pytest.raises(ConfigError, match=r"'teacher'.*available: previous"):
        check_gates(["mAP >= teacher - 1"], {"mAP": 1.0}, {"previous": {"mAP": 1.0}})
    with pytest.raises(ConfigError, match=r"available: \(none\)"):
        check_gates(["mAP >= 0.9 * teacher"], {"mAP": 1.0})


def test_malformed_rule_in_check_gates_is_a_config_error():
    with pytest.raises(ConfigError):
        check_gates(["mAP > 1"], {"mAP": 2.0})


def test_rules_from_config_are_checked():
    cfg = load_config("", ["TEST.GATES", "['mAP >= 50', 'rank1 >= previous - 1']"])
    decisions = check_gates(cfg.TEST.GATES, {"mAP": 60.0, "rank1": 88.0}, {"previous": {"rank1": 90.0}})
    assert [(d.threshold, d.passed) for d in decisions] == [(50.0, True), (89.0, False)]


# -- raising ----------------------------------------------------------------------------------------------------


def test_raise_if_failed_passes_silently_when_all_pass():
    decisions = check_gates(["mAP >= 1"], {"mAP": 2.0})
    assert raise_if_failed(decisions, "prune") is None
    assert raise_if_failed([], "prune") is None


def test_gate_failed_names_failed_rules_and_carries_every_decision():
    decisions = check_gates(["mAP >= 50", "rank1 >= 90", "size_mb <= 10"],
                            {"mAP": 60.0, "rank1": 85.0, "size_mb": 12.0})
    with pytest.raises(GateFailed) as info:
        raise_if_failed(decisions, "quantize")
    error = info.value
    assert error.decisions == decisions  # passed ones included
    message = str(error)
    assert message.startswith("quantize: 2 gate(s) failed")
    assert "rank1 >= 90" in message and "size_mb <= 10" in message
    assert "mAP >= 50" not in message
    assert "got 85" in message and "needed >= 90" in message


def test_gate_failed_is_not_a_config_error():
    error = GateFailed("x", [])
    assert not isinstance(error, ConfigError)
    assert GateFailed("x").decisions == []


# -- run directory ----------------------------------------------------------------------------------------------


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture
def cfg():
    return load_config("", ["SEED", "3"])


def test_start_writes_config_and_running_status(tmp_path, cfg):
    run = RunDirectory(str(tmp_path / "run")).start(cfg, "evaluate")
    assert read_json(run.file(STATUS_FILE))["status"] == "running"
    assert read_json(run.file(STATUS_FILE))["tool"] == "evaluate"
    assert load_config(run.file("config.yaml")) == cfg
    assert not (tmp_path / "run" / METRICS_FILE).exists()


def test_finish_accepted_records_gates(tmp_path, cfg):
    run = RunDirectory(str(tmp_path / "run")).start(cfg, "evaluate")
    decisions = check_gates(["mAP >= previous - 0.5"], {"mAP": 79.5}, {"previous": {"mAP": 80.0}})
    path = run.finish({"mAP": 79.5, "rank1": 90.0}, decisions)
    assert path == str(tmp_path / "run" / METRICS_FILE)
    metrics = read_json(path)
    assert metrics["mAP"] == 79.5 and metrics["rank1"] == 90.0
    assert metrics["accepted"] is True
    assert metrics["gates"] == [decisions[0].to_dict()]
    assert metrics["gates"][0]["threshold"] == 79.5
    assert read_json(run.file(STATUS_FILE))["status"] == "accepted"


def test_finish_rejected_records_failed_decision(tmp_path, cfg):
    run = RunDirectory(str(tmp_path / "run")).start(cfg, "evaluate")
    decisions = check_gates(["mAP >= 50", "rank1 >= 95"], {"mAP": 60.0, "rank1": 90.0})
    run.finish({"mAP": 60.0, "rank1": 90.0}, decisions)
    metrics = read_json(run.file(METRICS_FILE))
    assert metrics["accepted"] is False
    assert [g["passed"] for g in metrics["gates"]] == [True, False]
    assert metrics["gates"][1]["threshold"] == 95.0
    assert read_json(run.file(STATUS_FILE))["status"] == "rejected"


def test_finish_without_gates_is_accepted(tmp_path, cfg):
    run = RunDirectory(str(tmp_path / "run")).start(cfg, "evaluate")
    run.finish({"mAP": 1.0})
    metrics = read_json(run.file(METRICS_FILE))
    assert metrics["gates"] == [] and metrics["accepted"] is True


def test_start_removes_a_stale_metrics_file(tmp_path, cfg):
    folder = tmp_path / "run"
    first = RunDirectory(str(folder)).start(cfg, "evaluate")
    first.finish({"mAP": 99.0})
    assert (folder / METRICS_FILE).exists()
    second = RunDirectory(str(folder)).start(cfg, "evaluate")
    assert not (folder / METRICS_FILE).exists()  # nothing from the old run looks like a finished new one
    assert read_json(second.file(STATUS_FILE))["status"] == "running"


def test_guard_records_failure_and_leaves_no_metrics(tmp_path, cfg):
    folder = tmp_path / "run"
    RunDirectory(str(folder)).start(cfg, "evaluate").finish({"mAP": 99.0})  # a previous, finished run
    run = RunDirectory(str(folder)).start(cfg, "evaluate")
    with pytest.raises(DataError, match="broken image"):
        with run.guard():
            raise DataError("broken image /x.jpg")
    status = read_json(run.file(STATUS_FILE))
    assert status["status"] == "failed"
    assert status["error"] == "DataError: broken image /x.jpg"
    assert not (folder / METRICS_FILE).exists()


def test_guard_keeps_rejected_status_on_gate_failure(tmp_path, cfg):
    run = RunDirectory(str(tmp_path / "run")).start(cfg, "evaluate")
    decisions = check_gates(["mAP >= 90"], {"mAP": 60.0})
    with pytest.raises(GateFailed):
        with run.guard():
            run.finish({"mAP": 60.0}, decisions)
            raise_if_failed(decisions, "evaluate")
    assert read_json(run.file(STATUS_FILE))["status"] == "rejected"
    assert read_json(run.file(METRICS_FILE))["accepted"] is False


def test_guard_passes_through_on_success(tmp_path, cfg):
    run = RunDirectory(str(tmp_path / "run")).start(cfg, "evaluate")
    with run.guard() as inside:
        assert inside is run
        run.finish({"mAP": 1.0})
    assert read_json(run.file(STATUS_FILE))["status"] == "accepted"


def test_metrics_json_accepts_numpy_and_torch_scalars(tmp_path):
    import numpy as np
    import torch

    run = RunDirectory(str(tmp_path / "run")).start(get_cfg(), "evaluate")
    run.finish({"mAP": np.float32(0.5), "rank1": torch.tensor(0.25), "cmc": np.array([1.0, 0.5])})
    metrics = read_json(run.file(METRICS_FILE))
    assert metrics["mAP"] == 0.5 and metrics["rank1"] == 0.25 and metrics["cmc"] == [1.0, 0.5]


def test_decision_describe():
    decision = GateDecision("mAP >= 50", "mAP", ">=", 49.0, 50.0, None, None, False)
    assert decision.describe() == "mAP >= 50 (got 49, needed >= 50)"


# -- every test set, validation before the work, verdicts ------------------------------------------------------

TWO_SETS = {"dataset": "Market1501", "mAP": 60.0, "rank1": 80.0, "cosine_mean": 0.99,
            "datasets": {"Market1501": {"mAP": 60.0, "rank1": 80.0}, "DukeMTMC": {"mAP": 30.0, "rank1": 50.0}}}


def test_a_rule_applies_to_every_test_set_and_each_must_pass():
    decisions = check_gates(["mAP >= 40"], TWO_SETS)
    assert [(d.dataset, d.passed) for d in decisions] == [("Market1501", True), ("DukeMTMC", False)]
    with pytest.raises(GateFailed, match=r"mAP >= 40 \[DukeMTMC\]"):
        raise_if_failed(decisions, "teacher")


def test_a_rule_may_name_its_test_set():
    (decision,) = check_gates(["mAP >= 40 on Market1501"], TWO_SETS)
    assert decision.dataset == "Market1501" and decision.passed
    teacher = {"dataset": "Market1501", "datasets": {"Market1501": {"rank1": 90.0}, "DukeMTMC": {"rank1": 51.0}}}
    (decision,) = check_gates(["rank1 >= teacher - 2 on DukeMTMC"], TWO_SETS, {"teacher": teacher})
    assert decision.threshold == 49.0 and decision.passed  # the reference's value on the same set


def test_stage_level_numbers_hold_for_every_set():
    decisions = check_gates(["cosine_mean >= 0.95"], TWO_SETS)
    assert [d.value for d in decisions] == [0.99, 0.99]


def test_rules_naming_a_reference_read_the_measurement_made_for_it_on_the_sets_it_holds():
    """An OpenVINO QAT file: OpenVINO's mAP against FP32, but the file's own Q/DQ semantics against the fake-quant
    model it was exported from (ResNet-18-IBN 1/4 on AVX2: OpenVINO 52.27, semantics 52.45, fake-quant 52.47)."""
    fake_quant = {"dataset": "Market1501", "mAP": 52.47}
    semantics = Measurement("the file's Q/DQ semantics", {"dataset": "Market1501", "mAP": 52.45})
    gates = GateSet(["mAP >= fake_quant - 0.1", "mAP >= 60", "mAP >= fake_quant - 50"])
    plain = gates.check(Judged(TWO_SETS, {"fake_quant": fake_quant}, scope="openvino"))
    judged = gates.check(Judged(TWO_SETS, {"fake_quant": fake_quant}, scope="openvino",
                                measured_for={"fake_quant": semantics}))
    assert [(d.dataset, d.value, d.passed) for d in plain[:2]] == [("Market1501", 60.0, True), ("DukeMTMC", 30.0,
                                                                                               False)]
    first = judged[0]
    assert (first.value, first.threshold, first.passed) == (52.45, pytest.approx(52.37), True)
    assert first.measured_on == "the file's Q/DQ semantics"
    assert "[openvino] [Market1501] [the file's Q/DQ semantics] (got 52.45" in first.describe()
    # a set the measurement does not hold reads the item's own metrics; so does every rule naming no such reference
    assert (judged[1].dataset, judged[1].value, judged[1].measured_on) == ("DukeMTMC", 30.0, None)
    assert [(d.value, d.measured_on) for d in judged[2:4]] == [(60.0, None), (30.0, None)]
    assert judged[4].value == 52.45 and judged[5].value == 30.0


def test_a_reference_measured_on_some_sets_only_is_named_on_those_only():
    """QAT's fake-quant model is evaluated on the first test set: a rule naming it on every set would compare the
    other sets' INT8 mAP with the first set's fake-quant mAP. Refused before any work, saying how to write it."""
    gates = GateSet(["mAP >= fake_quant - 0.1"], "stage 'quantize'")
    sets = ["Market1501", "DukeMTMC"]
    with pytest.raises(ConfigError, match=r"stage 'quantize': gate rule 'mAP >= fake_quant - 0.1' names reference "
                                          r"'fake_quant', which is measured on Market1501 only; add 'on Market1501'"):
        gates.validate(["mAP"], {"fake_quant": ["mAP"]}, sets, {"fake_quant": ["Market1501"]})
    with pytest.raises(ConfigError, match="measured on Market1501 only"):
        GateSet(["mAP >= fake_quant - 0.1 on DukeMTMC"]).validate(["mAP"], {"fake_quant": ["mAP"]}, sets,
                                                                  {"fake_quant": ["Market1501"]})
    GateSet(["mAP >= fake_quant - 0.1 on Market1501"]).validate(["mAP"], {"fake_quant": ["mAP"]}, sets,
                                                                {"fake_quant": ["Market1501"]})
    gates.validate(["mAP"], {"fake_quant": ["mAP"]}, ["Market1501"], {"fake_quant": ["Market1501"]})  # one set


def test_validation_names_the_stage_the_rule_and_the_valid_names():
    gates = GateSet(["mAp >= 40"], "stage 'teacher'")
    with pytest.raises(ConfigError, match=r"stage 'teacher': gate rule 'mAp >= 40' names metric 'mAp'.*valid: mAP"):
        gates.validate(["mAP", "rank1"], {}, ["Synthetic"])
    with pytest.raises(ConfigError, match=r"names reference 'teacher'; available: \(none\)"):
        GateSet(["mAP >= teacher"]).validate(["mAP"], {}, ["Synthetic"])
    with pytest.raises(ConfigError, match="reference 'teacher' has no 'cross_mAP'"):
        GateSet(["cross_mAP >= teacher"]).validate(["cross_mAP"], {"teacher": ["mAP"]}, ["Synthetic"])
    with pytest.raises(ConfigError, match="names test set 'Duke'; this stage evaluates: Synthetic"):
        GateSet(["mAP >= 1 on Duke"]).validate(["mAP"], {}, ["Synthetic"])
    GateSet(["mAP >= 0.9 * teacher on Synthetic"]).validate(["mAP"], {"teacher": ["mAP"]}, ["Synthetic"])


def test_no_rule_is_ungated_never_accepted():
    assert status_of([], gated=False) == "ungated"
    assert status_of(check_gates(["mAP >= 1"], {"mAP": 2.0}), gated=True) == "accepted"
    assert status_of(check_gates(["mAP >= 3"], {"mAP": 2.0}), gated=False) == "rejected"  # a built-in check failed


def test_nan_never_passes_and_says_so():
    (decision,) = check_gates(["collapse_mean_cosine <= 0.99"], {"collapse_mean_cosine": float("nan")})
    assert not decision.passed and "NaN never passes" in decision.describe()


def _verdict(cfg_overrides, spec, tmp_path):
    cfg = load_config("", cfg_overrides)
    return Verdict("teacher", cfg, spec), RunDirectory(str(tmp_path / "run")).start(cfg, "train_teacher")


SPEC = GateSpec(("mAP", "rank1", "collapse_mean_cosine", "distinct_nn_share"), {}, ("Synthetic",))
HEALTHY = {"dataset": "Synthetic", "mAP": 30.0, "rank1": 40.0, "collapse_mean_cosine": 0.02,
           "distinct_nn_share": 0.85}


def test_a_verdict_writes_the_decision_and_the_status(tmp_path):
    verdict, run = _verdict(["TEST.GATES", '("mAP >= 20",)'], SPEC, tmp_path)
    decisions = verdict(run, dict(HEALTHY))
    assert [d.rule for d in decisions] == ["mAP >= 20", "collapse_mean_cosine <= 0.99", "distinct_nn_share >= 0.05"]
    assert read_json(run.file(STATUS_FILE))["status"] == "accepted" == verdict.status
    assert read_json(run.file(METRICS_FILE))["status"] == "accepted"


def test_a_verdict_without_gates_is_ungated_and_its_built_in_check_still_rejects(tmp_path):
    verdict, run = _verdict([], SPEC, tmp_path)
    verdict(run, dict(HEALTHY))
    assert read_json(run.file(STATUS_FILE))["status"] == "ungated"
    assert read_json(run.file(METRICS_FILE))["accepted"] is False
    verdict, run = _verdict([], SPEC, tmp_path / "collapsed")
    with pytest.raises(GateFailed, match="collapse_mean_cosine <= 0.99"):
        verdict(run, {**HEALTHY, "collapse_mean_cosine": 1.0})  # the same output for every input
    assert read_json(run.file(STATUS_FILE))["status"] == "rejected"


def test_a_bad_gate_fails_when_the_verdict_is_built_not_after_the_work(tmp_path):
    with pytest.raises(ConfigError, match="names metric 'mAp'"):
        Verdict("teacher", load_config("", ["TEST.GATES", '("mAp >= 20",)']), SPEC)
    with pytest.raises(ConfigError, match="TEST.GATE_REFERENCE: metrics file not found"):
        Verdict("teacher", load_config("", ["TEST.GATE_REFERENCE", str(tmp_path / "none.json")]), SPEC)
    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"dataset": "Synthetic", "rank1": 50.0}))
    with pytest.raises(ConfigError, match="reference 'reference' has no 'mAP'"):
        Verdict("teacher", load_config("", ["TEST.GATE_REFERENCE", str(reference), "TEST.GATES",
                                            '("mAP >= reference - 1",)']), SPEC)
