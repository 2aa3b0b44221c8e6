"""Summarise tools/quantize.py run folders as one Markdown table row each (the INT8 tables of README and docs/results).

    python benchmarks/summarize_quant.py output/q/r18q_s0_ptq_minmax output/q/r18q_s0_qat ...
    python benchmarks/summarize_quant.py --targets output/q/*_s7     # one row per deployment target

Every number is read from the run's metrics.json: FP32 and INT8 were measured in the same run, on the same
query/gallery, and their latencies side by side (so the speed-up is a same-run ratio).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Dict

from summarize_runs import read_metrics  # benchmarks/ is the script directory, first on sys.path


def method_label(quantization: Dict[str, object]) -> str:
    if quantization.get("method") == "qat":
        qat = quantization.get("qat", {})
        losses = " + ".join(qat.get("losses", []))
        return f"QAT {qat.get('iters', '?')} it" + (f", {losses}" if losses else "")
    calibration = quantization.get("calibration", {})
    return f"PTQ {calibration.get('method', '?')}"


def target_formats(folder: str) -> Dict[str, Dict[str, object]]:
    """Each shipped file's INT8 format, by target name, from the run's model card ({} without one)."""
    path = os.path.join(folder, "model_card.json")
    if not os.path.isfile(path):
        return {}
    with open(path, "r", encoding="utf-8") as handle:
        card = json.load(handle)
    entries = [card, *card.get("targets", [])]  # the primary file at the top level, the others under "targets"
    return {t["target"]["target"]: t["target"].get("format", {}) for t in entries if "target" in t}


def rounding_label(quantization: Dict[str, object], fmt: Dict[str, object], fallback: Dict[str, object],
                   accepted: bool) -> str:
    """PTQ weight rounding of one target's file: GPTQ where QUANT.WEIGHT_ROUNDING applied it to the format's weight
    bits, else nearest; "auto" records which rounding shipped when the preferred one failed a gate."""
    refinement = quantization.get("refinement", {})
    if quantization.get("method") != "ptq" or not fmt or not refinement:
        return ""
    asked = refinement.get("weight_rounding", "auto")
    if asked in ("auto", "nearest"):
        preferred = "GPTQ" if fmt.get("weight_bits") in refinement.get("gptq_weight_bits", []) else "nearest"
    else:  # asked for by name: every format gets it
        preferred = {"gptq": "GPTQ", "gptaq": "GPTAQ"}.get(asked, asked)
    shipped = fallback.get("weight_rounding", {}).get("shipped")
    if shipped and shipped.upper() != preferred.upper():
        return f"; {preferred} file failed a gate, {shipped} {'shipped' if accepted else 'judged too'}"
    return f", {preferred}" + (" (the other rounding also failed)" if shipped else "")


def speedup_cell(speedup) -> str:
    """A same-run INT8-over-FP32 ratio, or "-" where the runtime did not run here (TensorRT on a CPU machine)."""
    return "-" if speedup is None else f"{speedup:.2f}×"


def fallback_cell(metrics: Dict[str, object]) -> str:
    fallback = metrics.get("fallback", {})
    if not fallback.get("used"):
        return "-"
    kept = len(fallback.get("fp32_layers", []))
    full = fallback.get("full_int8", {}).get("mAP")
    before = f"; all-INT8 mAP {full:.2f}" if full is not None else ""
    latency = metrics.get("latency", {})
    cost = ""
    if "batch1" in latency.get("int8_without_fallback", {}):  # same run: what the FP32 layers cost at batch 1
        # (a target with no CPU runtime here, e.g. tensorrt, has no latency)
        cost = (f"; b1 {latency['int8_without_fallback']['batch1']['ms_p50']:.3f} → "
                f"{latency['int8']['batch1']['ms_p50']:.3f} ms")
    return f"{kept} node{'s' if kept != 1 else ''} FP32{before}{cost}"


def runtime_cell(quantization: Dict[str, object]) -> str:
    """The primary target's runtime vs the graph's own Q/DQ semantics (runs before this record: "-"), and how much
    further from FP32 it lands than those semantics (runs before that record: no gap)."""
    parity = quantization.get("runtime_parity")
    return parity_text(parity["cosine_min"], parity["cosine_mean"], parity.get("fp32_gap")) if parity else "-"


def parity_text(cosine_min: float, cosine_mean: float, fp32_gap=None) -> str:
    """Runtime vs Q/DQ cosine min / mean, and how much further from FP32 the runtime lands (negative: closer)."""
    gap = "" if fp32_gap is None else f" (FP32 gap {fp32_gap:+.4f})"
    return f"{cosine_min:.3f} / {cosine_mean:.4f}{gap}"


def row(folder: str) -> str:
    m = read_metrics(folder)
    fp32, int8 = m["fp32"]["mAP"], m["mAP"]
    latency = m.get("latency", {})
    size = m.get("size_bytes", {})
    fake = f" (fake-quant {m['fake_quant']['mAP']:.2f})" if isinstance(m.get("fake_quant"), dict) else ""
    cells = [
        os.path.basename(folder.rstrip("/")),
        method_label(m.get("quantization", {})),
        f"{fp32:.2f}",
        f"{int8:.2f} ({int8 - fp32:+.2f}){fake}",
        f"{m['rank1']:.2f}",
        f"{m['cosine_mean']:.3f} / {m['cosine_min']:.3f}",
        f"{m['top10_overlap']:.1f}",
        runtime_cell(m.get("quantization", {})),
        f"{latency.get('speedup_batch1', float('nan')):.2f}× / {latency.get('speedup_batch32', float('nan')):.2f}×",
        f"{size.get('fp32', 0) / 1e6:.2f} → {size.get('int8', 0) / 1e6:.2f} MB",
        fallback_cell(m),
        "yes" if m.get("accepted") else "**rejected**",
    ]
    return "| " + " | ".join(cells) + " |"


def rank1_cell(metrics: Dict[str, object], fp32_rank1: float) -> str:
    """Rank-1 change against FP32 and, where the run compared them query by query, the queries lost / gained."""
    if not isinstance(metrics.get("rank1"), (int, float)):
        return "-"
    flips = (f" ({metrics['rank1_lost']:.0f} / {metrics['rank1_gained']:.0f})"
             if isinstance(metrics.get("rank1_lost"), (int, float)) else "")
    return f"{metrics['rank1'] - fp32_rank1:+.2f}{flips}"


def map_cell(metrics: dict, fp32_map: float) -> str:
    """INT8 mAP and its change against FP32, ± the change's paired standard error where it was measured."""
    se = metrics.get("mAP_drop_se")
    spread = f" ± {se:.2f}" if isinstance(se, (int, float)) else ""
    return f"{metrics['mAP']:.2f} ({metrics['mAP'] - fp32_map:+.2f}{spread})"


def fake_cell(fake, semantics) -> str:
    """A QAT file's fake-quant mAP, and its Q/DQ semantics' where the target's runtime re-fuses the graph (what the
    fake_quant rules were checked on there)."""
    if fake is None:
        return ""
    if isinstance(semantics, dict) and "mAP" in semantics:
        return f" (fake-quant {fake:.2f}; the file's Q/DQ semantics {semantics['mAP']:.2f})"
    return f" (fake-quant {fake:.2f})"


def accepted_cell(target: Dict[str, object]) -> str:
    """Whether the target's INT8 file passed, and, where the target shipped its FP32 model instead (INT8 ran slower
    in every timing round, QUANT.BENCHMARK.WHEN_SLOWER), that file: the row's numbers stay the INT8 file's."""
    if not target.get("accepted"):
        return "**rejected**"
    shipped = target.get("shipped")
    return f"yes; ships FP32 ({shipped}): INT8 slower" if shipped and shipped != target.get("file") else "yes"


def target_rows(folder: str) -> list:
    """One row per deployment target of a run: each file judged in its own runtime (metrics.json "targets")."""
    m = read_metrics(folder)
    fp32 = m["fp32"]["mAP"]
    fake = m["fake_quant"]["mAP"] if isinstance(m.get("fake_quant"), dict) else None
    rows = []
    formats = target_formats(folder)
    for name, t in m.get("targets", {}).items():
        runtime = (parity_text(t["runtime_cosine_min"], t["runtime_cosine_mean"], t.get("runtime_fp32_gap"))
                   if "runtime_cosine_min" in t else "not run here")
        kinds = t.get("certification", {})
        held = sum(1 for k in kinds.values() if k["claimed"] and k["holds"])
        claimed = sum(1 for k in kinds.values() if k["claimed"])
        rows.append("| " + " | ".join([
            os.path.basename(folder.rstrip("/")), name,
            method_label(m.get("quantization", {})) + rounding_label(m.get("quantization", {}), formats.get(name, {}),
                                                                     t.get("fallback", {}), bool(t.get("accepted"))),
            f"{fp32:.2f}",
            map_cell(t, fp32) + fake_cell(fake, t.get("qdq_semantics")),
            rank1_cell(t, m["fp32"].get("rank1", float("nan"))),
            f"{t['cosine_mean']:.3f} / {t['cosine_min']:.3f}", runtime, f"{int(t.get('u8s8_pair_sum_max', 0))}",
            f"{held} / {claimed}", speedup_cell(t.get("latency", {}).get("speedup_batch32")),
            fallback_cell({**m, "fallback": t.get("fallback", {}), "latency": t.get("latency", {})}),
            accepted_cell(t)]) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="tools/quantize.py OUTPUT_DIR folders")
    parser.add_argument("--targets", action="store_true", help="one row per deployment target (QUANT.TARGETS)")
    args = parser.parse_args()
    folders = [f for f in args.folders if os.path.isfile(os.path.join(f, "metrics.json"))]
    if args.targets:
        print("| run | target | method | FP32 mAP | INT8 mAP (Δ ± SE) | Rank-1 Δ (queries lost / gained) "
              "| cosine mean / min | runtime vs Q/DQ cosine min / mean | u8s8 pair-sum bound "
              "| CPU kinds proven / claimed | speed-up b32 | fallback | accepted |")
        print("|" + " --- |" * 13)
        for folder in folders:
            print("\n".join(target_rows(folder)))
        return
    print("| run | method | FP32 mAP | INT8 mAP (Δ) | INT8 Rank-1 | cosine mean / min | top-10 overlap "
          "| ORT vs Q/DQ cosine min / mean | speed-up b1 / b32 | size | fallback | accepted |")
    print("|" + " --- |" * 12)
    for folder in folders:
        print(row(folder))


if __name__ == "__main__":
    main()
