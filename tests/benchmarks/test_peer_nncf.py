"""benchmarks/peer_nncf.py's parts that run without NNCF: per-query AP and its paired difference (what the held-out
comparison reports), the --reuse stamp that keeps kept NNCF files from being scored against another run, and the
argument checks (one line, exit 2)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from compressreid.config import get_cfg
from compressreid.data.records import ImageRecord
from compressreid.evaluation.evaluator import EmbeddedSplits, ReIDEvaluator
from compressreid.quant import compare

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")


@pytest.fixture
def peer(monkeypatch):
    """The script and its helper module, imported as the script imports them (from benchmarks/)."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    import _bench
    import peer_nncf

    return type("Peer", (), {"bench": _bench, "script": peer_nncf})


def tiny_test_set(seed: int = 0):
    """4 query identities (one without any gallery match), 2 gallery images each plus distractors; random
    embeddings pulled towards their identity so APs differ between queries."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 8))
    q_pids, g_pids = [1, 2, 3, 5], [1, 1, 2, 2, 3, 3, 4, 4, 0, 0]
    q_records = [ImageRecord(f"q{i}.png", pid, 0) for i, pid in enumerate(q_pids)]
    g_records = [ImageRecord(f"g{i}.png", pid, 1) for i, pid in enumerate(g_pids)]
    q = torch.tensor(np.stack([centres[p] for p in q_pids]) + rng.normal(scale=1.0, size=(4, 8)), dtype=torch.float32)
    g = torch.tensor(np.stack([centres[p] for p in g_pids]) + rng.normal(scale=1.0, size=(10, 8)), dtype=torch.float32)
    images = compare.TestImages("tiny", torch.empty(4, 3, 2, 2), q_records, torch.empty(10, 3, 2, 2), g_records)
    return images, q, g


def test_per_query_ap_averages_to_the_evaluators_map_and_marks_queries_without_a_match(peer):
    images, q, g = tiny_test_set()
    ap = peer.bench.per_query_ap(q, g, images, "cosine")
    assert ap.shape == (4,)
    assert np.isnan(ap[3]) and np.isfinite(ap[:3]).all()  # pid 5 has no gallery image
    result = ReIDEvaluator(metric="cosine", roc=False).evaluate_embedded(
        EmbeddedSplits("tiny", q, images.q_records, g, images.g_records))
    assert np.nanmean(ap) == pytest.approx(result.metrics["mAP"], abs=1e-6)


def args_for(peer, monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["peer_nncf.py", "output/ev/model", *argv])
    return peer.script.parse_args()


def test_reuse_scores_kept_files_only_when_made_like_this_run(peer, monkeypatch, tmp_path, capsys):
    fp32 = tmp_path / "fp32.onnx"
    fp32.write_bytes(b"the fp32 file")
    keep = tmp_path / "keep"
    keep.mkdir()
    args = args_for(peer, monkeypatch, "--keep", str(keep), "--reuse", "--no-nncf-variant", "--max-drop", "0.1")
    cfg, other_cfg = get_cfg(), get_cfg()
    cfg.SEED, other_cfg.SEED = 1, 2  # calibration samples
    files = {}
    for name in ("NNCF", "NNCF accuracy control"):
        files[name] = str(keep / peer.script.NNCF_FILES[name])
        with open(files[name], "wb") as handle:
            handle.write(name.encode())

    def refused(*call) -> str:
        with pytest.raises(SystemExit) as exit_info:
            peer.script.reused(*call)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "without --reuse" in err
        return err

    assert "fp32_sha256" in refused(args, str(fp32), cfg, str(keep))  # no stamp at all

    peer.script.write_stamp(str(keep), peer.script.provenance(args, str(fp32), cfg), {"FP32": str(fp32), **files})
    assert peer.script.reused(args, str(fp32), cfg, str(keep)) == files
    assert "config_sha256 differs" in refused(args, str(fp32), other_cfg, str(keep))  # another calibration seed
    other_drop = args_for(peer, monkeypatch, "--keep", str(keep), "--reuse", "--no-nncf-variant", "--max-drop", "0.2")
    assert "max_drop differs" in refused(other_drop, str(fp32), cfg, str(keep))
    fp32.write_bytes(b"another fp32 file")
    assert "fp32_sha256 differs" in refused(args, str(fp32), cfg, str(keep))
    fp32.write_bytes(b"the fp32 file")

    with open(files["NNCF accuracy control"], "wb") as handle:  # another run overwrote it after the stamp
        handle.write(b"another run's file")
    assert "nncf_ac.onnx" in refused(args, str(fp32), cfg, str(keep))
    os.remove(files["NNCF accuracy control"])
    assert "lacks nncf_ac.onnx" in refused(args, str(fp32), cfg, str(keep))


def test_a_held_out_set_sharing_images_with_the_chosen_on_set_is_found_by_content(peer):
    images, _, _ = tiny_test_set()
    rng = np.random.default_rng(1)
    chosen = compare.TestImages("chosen", torch.tensor(rng.random((4, 3, 2, 2))), images.q_records,
                                torch.tensor(rng.random((10, 3, 2, 2))), images.g_records)
    renamed = compare.TestImages("renamed", chosen.q_images.clone(), [], torch.tensor(rng.random((3, 3, 2, 2))), [])
    other = compare.TestImages("other", torch.tensor(rng.random((4, 3, 2, 2))), [],
                               torch.tensor(rng.random((3, 3, 2, 2))), [])
    assert peer.script.shared_images(renamed, chosen) == 4  # same pictures under other names
    assert peer.script.shared_images(other, chosen) == 0


def test_per_query_ap_of_a_broken_model_is_nan_not_an_error(peer):
    images, q, g = tiny_test_set()
    q[1, 0] = float("nan")
    assert np.isnan(peer.bench.per_query_ap(q, g, images, "cosine")).all()


@pytest.mark.parametrize("argv, message", [
    (["--reuse"], "--reuse needs --keep"),
    (["--holdout", "DATASETS.SYNTHETIC.SEED"], "--holdout needs KEY VALUE pairs"),
])
def test_bad_arguments_exit_2_with_one_line(peer, monkeypatch, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        args_for(peer, monkeypatch, *argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_ours_without_a_shipped_file_exits_2_naming_the_rejected_one(peer, tmp_path, capsys):
    """A rejected run ships no student_int8.onnx: one line naming the rejected file to pass instead, exit 2, before
    any export or quantization (it was a traceback after loading the model)."""
    (tmp_path / "student_int8.rejected.onnx").write_bytes(b"")
    for ours, message in ((str(tmp_path), "pass " + str(tmp_path / "student_int8.rejected.onnx")),
                          (str(tmp_path / "nothing"), "expected a tools/quantize.py run folder or an INT8 ONNX file")):
        with pytest.raises(SystemExit) as exit_info:
            peer.script.check_ours(ours)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    peer.script.check_ours(str(tmp_path / "student_int8.rejected.onnx"))  # a file: accepted as it is
