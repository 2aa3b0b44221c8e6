"""Sensitivity analysis and accuracy-aware fallback (compressreid.quant.fallback) with fake quantize / judge
callables: which layers are tried, in which order, and when the search stops."""

from __future__ import annotations

import pytest

from compressreid.errors import ConfigError
from compressreid.quant.fallback import (JUDGED_PER_NODE, FallbackSearch, LayerSensitivity, accuracy_aware_fallback,
                                         kept_search, layer_sensitivity, rank, spread_diagnosis)

FP32_MAP = 80.0


class FakeQuantizer:
    """Records each call and writes a stand-in file, as the real quantizer would: its content names the nodes kept
    in FP32 and quantized, but for nodes in ``no_ops`` (excluding them changes nothing)."""

    def __init__(self, no_ops=()):
        self.calls, self.no_ops = [], set(no_ops)

    def __call__(self, out_path, exclude=(), only=()):
        self.calls.append((out_path, list(exclude), list(only)))
        with open(out_path, "w", encoding="utf-8") as handle:
            handle.write(f"model {[n for n in exclude if n not in self.no_ops]} {list(only)}")
        return out_path


class FakeJudge:
    """Metrics of the model the quantizer produced last; passes when ``passes(exclude)`` says so."""

    def __init__(self, quantizer, metrics_of_only=None, passes=lambda kept: False):
        self.quantizer, self.metrics_of_only, self.passes = quantizer, metrics_of_only or {}, passes
        self.paths = []

    def metrics(self, path):
        return self(path)[0]

    def __call__(self, path):
        self.paths.append(path)
        _, exclude, only = self.quantizer.calls[-1]
        if only:
            return dict(self.metrics_of_only[only[0]]), True
        passed = self.passes(exclude)
        return {"mAP": FP32_MAP - 10 + len(exclude), "cosine_mean": 0.9 + 0.01 * len(exclude)}, passed


class ScoredJudge:
    """Fails every model; its mAP is ``scores[number of FP32 layers]``."""

    def __init__(self, quantizer, scores):
        self.quantizer, self.scores, self.calls = quantizer, scores, 0

    def __call__(self, path):
        self.calls += 1
        kept = len(self.quantizer.calls[-1][1])
        return {"mAP": self.scores[kept], "cosine_mean": 0.9 + 0.01 * kept}, False


RANKING = [LayerSensitivity(name, drop, cos)
           for name, drop, cos in (("conv_a", 5.0, 0.90), ("conv_b", 2.0, 0.95), ("conv_c", 1.0, 0.97),
                                   ("conv_d", 0.0, 0.99), ("conv_e", 0.0, 0.995))]


def test_sensitivity_quantizes_each_node_alone_and_ranks_most_sensitive_first(tmp_path):
    quantize = FakeQuantizer()
    judge = FakeJudge(quantize, metrics_of_only={
        "c1": {"mAP": FP32_MAP, "cosine_mean": 0.999},        # harmless
        "c2": {"mAP": FP32_MAP - 3.0, "cosine_mean": 0.98},   # the worst mAP drop
        "c3": {"mAP": FP32_MAP - 0.0001, "cosine_mean": 0.95},  # no real mAP drop (rounds to 0) but a low cosine
        "c4": {"mAP": FP32_MAP - 1.0, "cosine_mean": 0.99},
        "c5": {"mAP": FP32_MAP - 1.0, "cosine_mean": 0.97},   # ties c4 on mAP, worse cosine: ranked before it
    })
    ranking = layer_sensitivity(["c1", "c2", "c3", "c4", "c5"], quantize, judge, FP32_MAP, str(tmp_path),
                                progress=False)
    assert [s.layer for s in ranking] == ["c2", "c5", "c4", "c3", "c1"]
    assert ranking[0].mAP_drop == pytest.approx(3.0) and ranking[0].cosine_mean == 0.98
    assert ranking[0].to_dict() == {"layer": "c2", "mAP_drop": pytest.approx(3.0), "cosine_mean": 0.98}
    assert [(exclude, only) for _, exclude, only in quantize.calls] == [([], [c]) for c in ("c1", "c2", "c3", "c4",
                                                                                               "c5")]
    assert not list(tmp_path.iterdir())  # the scratch model is removed


def test_sensitivity_ranked_by_cosine_puts_the_lowest_embedding_cosine_first(tmp_path):
    quantize = FakeQuantizer()
    judge = FakeJudge(quantize, metrics_of_only={
        "c1": {"mAP": FP32_MAP - 3.0, "cosine_mean": 0.999},  # the largest mAP drop, but the embedding barely moves
        "c2": {"mAP": FP32_MAP, "cosine_mean": 0.95},         # no mAP drop, the lowest cosine
        "c3": {"mAP": FP32_MAP - 1.0, "cosine_mean": 0.98},
        "c4": {"mAP": FP32_MAP - 2.0, "cosine_mean": 0.98},   # ties c3 on cosine, larger mAP drop: ranked before it
    })
    ranking = layer_sensitivity(["c1", "c2", "c3", "c4"], quantize, judge, FP32_MAP, str(tmp_path), progress=False,
                                rank_by="cosine")
    assert [s.layer for s in ranking] == ["c2", "c4", "c3", "c1"]
    assert [s.layer for s in rank(ranking, "mAP")] == ["c1", "c4", "c3", "c2"]  # the same measurements by mAP


class RevertJudge:
    """Metrics of the model the quantizer produced last: the all-INT8 model's, plus what each node kept FP32
    alone wins back (``wins[node]``: mAP, cosine)."""

    def __init__(self, quantizer, wins):
        self.quantizer, self.wins = quantizer, wins

    def metrics(self, path):
        _, exclude, only = self.quantizer.calls[-1]
        assert not only and len(exclude) == 1  # one node in FP32, every other quantized
        mAP, cosine = self.wins[exclude[0]]
        return {"mAP": FP32_MAP - 2.0 + mAP, "cosine_mean": 0.97 + cosine}


def test_sensitivity_reverting_each_node_alone_puts_what_wins_back_most_first(tmp_path):
    quantize = FakeQuantizer()
    judge = RevertJudge(quantize, {"c1": (1.5, 0.001),    # the most mAP won back, the embedding barely moves
                                   "c2": (0.0, 0.02),     # the most cosine won back, no mAP
                                   "c3": (0.5, 0.01),
                                   "c4": (1.0, 0.01)})    # ties c3 on cosine, more mAP: before it
    ranking = layer_sensitivity(["c1", "c2", "c3", "c4"], quantize, judge, FP32_MAP, str(tmp_path), progress=False,
                                rank_by="cosine", scan="revert_alone")
    assert [s.layer for s in ranking] == ["c2", "c4", "c3", "c1"]
    assert [(exclude, only) for _, exclude, only in quantize.calls] == [([c], []) for c in ("c1", "c2", "c3", "c4")]
    assert ranking[0].to_dict() == {"layer": "c2", "mAP_drop": pytest.approx(2.0), "cosine_mean": pytest.approx(0.99)}
    assert [s.layer for s in rank(ranking, "mAP", "revert_alone")] == ["c1", "c4", "c3", "c2"]
    # the same files read as "quantize_alone" measurements would be ranked the other way round
    assert [s.layer for s in rank(ranking, "cosine")] == ["c1", "c3", "c4", "c2"]
    assert not list(tmp_path.iterdir())


def test_an_unknown_ranking_is_refused():
    with pytest.raises(ConfigError, match="QUANT.FALLBACK.RANK_BY 'speed'"):
        rank(RANKING, "speed")
    with pytest.raises(ConfigError, match="QUANT.FALLBACK.SCAN 'shuffle' is unknown"):
        rank(RANKING, "mAP", "shuffle")


def test_fallback_keeps_the_top_k_and_stops_at_the_first_passing_k(tmp_path):
    quantize = FakeQuantizer()
    judge = FakeJudge(quantize, passes=lambda kept: len(kept) >= 3)
    out = str(tmp_path / "fallback.onnx")
    outcome = accuracy_aware_fallback(RANKING, quantize, judge, out, max_fp32_layers=5)
    assert [exclude for _, exclude, _ in quantize.calls] == [["conv_a"], ["conv_a", "conv_b"],
                                                              ["conv_a", "conv_b", "conv_c"]]
    assert all(only == [] and path == out for path, _, only in quantize.calls)
    assert outcome.passed is True and outcome.path == out
    assert outcome.fp32_layers == ["conv_a", "conv_b", "conv_c"]
    assert outcome.metrics == {"mAP": FP32_MAP - 7, "cosine_mean": pytest.approx(0.93)}
    assert [t["passed"] for t in outcome.tried] == [False, False, True]
    assert outcome.tried[1] == {"fp32_layers": ["conv_a", "conv_b"], "mAP": FP32_MAP - 8,
                                "cosine_mean": pytest.approx(0.92), "passed": False}


def test_fallback_keeps_the_last_attempt_without_remaking_it_when_it_is_the_best(tmp_path):
    quantize = FakeQuantizer()
    judge = FakeJudge(quantize, passes=lambda kept: len(kept) >= 4)  # here mAP rises with every FP32 layer
    outcome = accuracy_aware_fallback(RANKING, quantize, judge, str(tmp_path / "f.onnx"), max_fp32_layers=2)
    assert len(quantize.calls) == 2 and len(judge.paths) == 2
    assert outcome.passed is False and outcome.fp32_layers == ["conv_a", "conv_b"]
    assert [t["passed"] for t in outcome.tried] == [False, False]


def test_fallback_that_never_passes_leaves_the_best_tried_model_not_the_last(tmp_path):
    """Here 2 layers in FP32 score best and 3 score worse: the file left behind (rejected) is the 2-layer one,
    quantized again (not judged again: its metrics are known), and every attempt is still recorded."""
    quantize = FakeQuantizer()
    judge = ScoredJudge(quantize, {1: 71.0, 2: 73.0, 3: 72.0})
    outcome = accuracy_aware_fallback(RANKING, quantize, judge, str(tmp_path / "f.onnx"), max_fp32_layers=3,
                                      all_int8={"mAP": 70.0, "cosine_mean": 0.95})
    assert [exclude for _, exclude, _ in quantize.calls] == [["conv_a"], ["conv_a", "conv_b"],
                                                              ["conv_a", "conv_b", "conv_c"], ["conv_a", "conv_b"]]
    assert judge.calls == 3 and outcome.path == str(tmp_path / "f.onnx")
    assert outcome.passed is False and outcome.fp32_layers == ["conv_a", "conv_b"] and outcome.metrics["mAP"] == 73.0
    assert [t["mAP"] for t in outcome.tried] == [71.0, 73.0, 72.0]


def test_fallback_that_never_beats_the_all_int8_model_keeps_that_one(tmp_path):
    """No FP32 layer helps (each costs mAP): the outcome names no file, so the all-INT8 model is what is left."""
    quantize = FakeQuantizer()
    judge = ScoredJudge(quantize, {1: 71.0, 2: 70.5})
    outcome = accuracy_aware_fallback(RANKING, quantize, judge, str(tmp_path / "f.onnx"), max_fp32_layers=2,
                                      all_int8={"mAP": 72.0, "cosine_mean": 0.95})
    assert len(quantize.calls) == 2 and outcome.path == "" and outcome.fp32_layers == []
    assert outcome.passed is False and outcome.metrics == {"mAP": 72.0, "cosine_mean": 0.95}


def test_fallback_budget_beyond_the_layer_count_tries_every_layer(tmp_path):
    quantize = FakeQuantizer()
    outcome = accuracy_aware_fallback(RANKING[:2], quantize, FakeJudge(quantize), str(tmp_path / "f.onnx"), 10)
    assert len(quantize.calls) == 2 and outcome.fp32_layers == ["conv_a", "conv_b"] and not outcome.passed


@pytest.mark.parametrize("ranking, budget", [(RANKING, 0), ([], 3)])
def test_fallback_with_nothing_to_try_returns_none(tmp_path, ranking, budget):
    quantize = FakeQuantizer()
    assert accuracy_aware_fallback(ranking, quantize, FakeJudge(quantize), str(tmp_path / "f.onnx"), budget) is None
    assert quantize.calls == []


def test_a_node_whose_exclusion_changes_nothing_is_skipped_unjudged_and_uncounted(tmp_path):
    """A gate's Mul whose tensors stay quantized for their other readers leaves the file as it was: it takes no
    place in the budget, is not judged, and is not reported as kept in FP32 (nor is a first node that leaves the
    all-INT8 file as it was)."""
    quantize = FakeQuantizer(no_ops={"conv_a", "conv_c"})
    all_int8 = quantize(str(tmp_path / "all_int8.onnx"))
    quantize.calls.clear()
    judge = FakeJudge(quantize, passes=lambda kept: len(kept) >= 3)
    outcome = accuracy_aware_fallback(RANKING, quantize, judge, str(tmp_path / "f.onnx"), max_fp32_layers=3,
                                      all_int8_path=all_int8)
    assert [exclude for _, exclude, _ in quantize.calls] == [["conv_a"], ["conv_b"], ["conv_b", "conv_c"],
                                                              ["conv_b", "conv_d"], ["conv_b", "conv_d", "conv_e"]]
    assert len(judge.paths) == 3 and [t["fp32_layers"] for t in outcome.tried] == [
        ["conv_b"], ["conv_b", "conv_d"], ["conv_b", "conv_d", "conv_e"]]
    assert outcome.passed and outcome.fp32_layers == ["conv_b", "conv_d", "conv_e"]
    assert outcome.no_effect == ["conv_a", "conv_c"]


def test_a_node_the_gates_cannot_tell_from_int8_is_judged_once_and_not_kept(tmp_path):
    """A node whose file differs but whose embeddings do not (the same mAP and cosine as the model before it) is
    dropped after one judgement; the file left behind is re-made without it."""
    quantize = FakeQuantizer()

    class Judge:
        def __init__(self):
            self.paths = []

        def __call__(self, path):
            self.paths.append(path)
            kept = [n for n in quantize.calls[-1][1] if n != "conv_b"]  # conv_b in FP32 computes the same
            return {"mAP": 70.0 + len(kept), "cosine_mean": 0.9 + 0.01 * len(kept)}, False

    judge = Judge()
    outcome = accuracy_aware_fallback(RANKING, quantize, judge, str(tmp_path / "f.onnx"), max_fp32_layers=2,
                                      all_int8={"mAP": 70.0, "cosine_mean": 0.9})
    assert [exclude for _, exclude, _ in quantize.calls] == [["conv_a"], ["conv_a", "conv_b"],
                                                              ["conv_a", "conv_c"]]
    assert len(judge.paths) == 3 and outcome.no_effect == ["conv_b"]
    assert outcome.fp32_layers == ["conv_a", "conv_c"] and not outcome.passed
    assert outcome.path == str(tmp_path / "f.onnx")  # the last attempt is the best: not made again

    quantize.calls.clear()
    judge.paths.clear()
    outcome = accuracy_aware_fallback(RANKING[:2], quantize, judge, str(tmp_path / "g.onnx"), max_fp32_layers=2,
                                      all_int8={"mAP": 70.0, "cosine_mean": 0.9})
    # the file on disk excludes conv_b too, so the kept model (conv_a alone) is made again
    assert [exclude for _, exclude, _ in quantize.calls] == [["conv_a"], ["conv_a", "conv_b"], ["conv_a"]]
    assert outcome.fp32_layers == ["conv_a"] and outcome.no_effect == ["conv_b"]


def test_a_file_left_as_the_kept_one_is_not_made_again_and_judging_is_bounded(tmp_path):
    """The last node leaves the kept file byte for byte as it was: the best (last kept) model is already on disk.
    And nodes that change no metric cost at most the budget in judgements."""
    quantize = FakeQuantizer(no_ops={"conv_b"})
    judge = ScoredJudge(quantize, {1: 71.0, 2: 70.0})
    outcome = accuracy_aware_fallback(RANKING[:2], quantize, judge, str(tmp_path / "f.onnx"), max_fp32_layers=2)
    assert [exclude for _, exclude, _ in quantize.calls] == [["conv_a"], ["conv_a", "conv_b"]]  # not made again
    assert outcome.fp32_layers == ["conv_a"] and outcome.no_effect == ["conv_b"] and judge.calls == 1

    quantize = FakeQuantizer()  # every node in FP32 measures exactly like the all-INT8 model
    outcome = accuracy_aware_fallback(RANKING, quantize, lambda path: ({"mAP": 70.0, "cosine_mean": 0.9}, False),
                                      str(tmp_path / "g.onnx"), max_fp32_layers=1,
                                      all_int8={"mAP": 70.0, "cosine_mean": 0.9})
    assert outcome is None and len(quantize.calls) == JUDGED_PER_NODE  # then it stops, with nothing kept


def _tried(*cosines):
    return [{"fp32_layers": [f"n{i}" for i in range(k + 1)], "mAP": 0.0, "cosine_mean": c, "passed": False}
            for k, c in enumerate(cosines)]


def test_spread_error_is_told_apart_from_error_held_by_a_few_nodes():
    # MobileNetV3-small's shape (measured): each node alone >= 0.997, all-INT8 0.968, six nodes in FP32 won 0.002 back
    spread_ranking = [LayerSensitivity(f"n{i}", 0.1, 0.997 + 0.0005 * i) for i in range(6)]
    found = spread_diagnosis(spread_ranking, {"cosine_mean": 0.968}, _tried(0.9680, 0.9694, 0.9698))
    assert found is not None and found["worst_single_node_cosine_mean"] == pytest.approx(0.997)
    assert found["recovered_share"] == pytest.approx(0.0018 / 0.032)
    # one node alone takes the embedding far from FP32: the error sits there, the budget is what decides
    held = [LayerSensitivity("bad", 2.0, 0.975), *spread_ranking[1:]]
    assert spread_diagnosis(held, {"cosine_mean": 0.968}, _tried(0.9680, 0.9694)) is None
    # the FP32 nodes won back a good share of the gap: not spread either
    assert spread_diagnosis(spread_ranking, {"cosine_mean": 0.968}, _tried(0.975, 0.985)) is None
    assert spread_diagnosis([], {"cosine_mean": 0.968}, _tried(0.97)) is None
    assert spread_diagnosis(spread_ranking, {"cosine_mean": 0.968}, []) is None


def test_spread_error_under_the_revert_scan_reads_what_one_fp32_node_wins_back():
    # every node kept FP32 alone lifts the all-INT8 0.968 by at most 0.004 of its 0.032 gap: spread
    spread_ranking = [LayerSensitivity(f"n{i}", 1.0, 0.972 - 0.0005 * i) for i in range(6)]
    found = spread_diagnosis(spread_ranking, {"cosine_mean": 0.968}, _tried(0.972, 0.974), "revert_alone")
    assert found is not None and found["best_single_fp32_node_cosine_mean"] == pytest.approx(0.972)
    assert found["recovered_share"] == pytest.approx(0.006 / 0.032)
    # one node in FP32 wins back half of the gap: held by that node
    held = [LayerSensitivity("bad", 0.5, 0.985), *spread_ranking]
    assert spread_diagnosis(held, {"cosine_mean": 0.968}, _tried(0.972, 0.974), "revert_alone") is None


def _search(rounding, map_, passed):
    return FallbackSearch(rounding, {"tried": [{"passed": passed}]}, f"{rounding}.onnx",
                          {"mAP": map_, "cosine_mean": 0.9})


def test_the_run_keeps_the_passing_search_else_the_best_left_by_any_rounding():
    gptq_better = [_search("gptq", 46.77, False), _search("nearest", 46.71, False)]
    assert kept_search(gptq_better).rounding == "gptq"  # not the last one searched
    assert kept_search([_search("gptq", 46.9, False), _search("nearest", 46.2, True)]).rounding == "nearest"
    assert kept_search([_search("gptq", 46.9, True)]).path == "gptq.onnx"
    assert not FallbackSearch("gptq", {"tried": []}, "", {"mAP": 1.0, "cosine_mean": 0.9}).passed
