"""The table phase of benchmarks/pair_selection.py: speed (per CPU kind) and accuracy (over seeds) per ladder entry,
the Pareto frontier of mAP share of the teacher vs INT8 speed-up, the chosen pair, a Markdown table and a plot."""

from __future__ import annotations

import glob
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

Row = Dict[str, object]


@dataclass(frozen=True)
class Targets:
    """The promises: INT8 student >= ``speedup`` x the FP32 teacher at ``batch`` and >= ``share`` of its mAP, over
    at least ``seeds`` seeds, with stable timing."""

    speedup: float = 10.0
    share: float = 0.95
    batch: int = 32
    seeds: int = 2


@dataclass
class Choice:
    """The chosen pair (None when no entry meets both targets), the frontier, and the verdict in words."""

    chosen: Optional[str]
    frontier: List[str]
    closest: Optional[str]
    verdict: List[str] = field(default_factory=list)


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def speed_records(out: str) -> Dict[str, Dict[str, Row]]:
    """CPU kind -> entry -> its speed record (as the speed phase stored it)."""
    kinds: Dict[str, Dict[str, Row]] = {}
    for path in sorted(glob.glob(os.path.join(out, "speed", "*", "*.json"))):
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        kinds.setdefault(str(record["machine"]["kind"]), {})[record["entry"]] = record
    return kinds


def speed_columns(record: Optional[Row], batches: Sequence[int]) -> Row:
    """The row's speed numbers from one speed record (empty when missing, the error when it failed)."""
    if record is None:
        return {"speed_note": "not measured"}
    if record.get("status") != "ok":
        return {"speed_note": f"skipped: {record.get('error', '')}"}
    row: Row = {"deploy_mac_ratio": record.get("mac_ratio"), "size": record["settings"]["size"]}
    for b in batches:
        s = record["speedup"].get(f"b{b}", {})
        best = record["best_runtime"].get(f"b{b}", {})
        row.update({f"speedup_b{b}": s.get(f"speedup_vs_teacher_b{b}"), f"speedup_low_b{b}": s.get(
            f"speedup_vs_teacher_b{b}_low"), f"cv_b{b}": s.get(f"timing_ratio_cv_b{b}"),
            f"stable_b{b}": bool(s.get(f"timing_stable_b{b}")), f"runtime_b{b}": best.get("student INT8", ""),
            f"teacher_runtime_b{b}": best.get("teacher FP32", "")})
    return row


def accuracy_columns(seeds: Sequence[Row]) -> Row:
    """Mean / std / min over the seeds that reached an INT8 mAP."""
    done = [s for s in seeds if _num(s.get("share"))]
    row: Row = {"seeds": len(done), "int8_all_accepted": bool(done) and all(s["int8_status"] == "accepted"
                                                                            for s in done)}
    if not done:
        return {**row, "accuracy_note": "; ".join(f"s{s['seed']}: {s['int8_status']}" for s in seeds) or "no seeds"}
    for key in ("int8_mAP", "teacher_mAP", "share", "fp32_mAP"):
        values = [float(s[key]) for s in done if _num(s.get(key))]
        if values:
            row[key] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    row["share_min"] = min(float(s["share"]) for s in done)
    row["int8_mAP_per_seed"] = [round(float(s["int8_mAP"]), 2) for s in done]
    return row


def judge_row(row: Row, targets: Targets) -> Row:
    """meets_speed / meets_accuracy / meets, and the worst-case margin min(speed-up / target, share / target)."""
    b = targets.batch
    speed, share = row.get(f"speedup_b{b}"), row.get("share")
    row["meets_speed"] = _num(speed) and speed >= targets.speedup and bool(row.get(f"stable_b{b}"))
    row["meets_accuracy"] = (_num(share) and share >= targets.share and row.get("seeds", 0) >= targets.seeds
                             and bool(row.get("int8_all_accepted")))
    row["meets"] = row["meets_speed"] and row["meets_accuracy"]
    row["margin"] = min(speed / targets.speedup, share / targets.share) if _num(speed) and _num(share) else None
    return row


def pareto_frontier(rows: Sequence[Row], batch: int) -> List[str]:
    """Entries no other entry beats on both speed-up and share (ties kept), fastest first."""
    points = [(r["entry"], r[f"speedup_b{batch}"], r["share"]) for r in rows
              if _num(r.get(f"speedup_b{batch}")) and _num(r.get("share"))]
    front = [p for p in points if not any(q[1] >= p[1] and q[2] >= p[2] and (q[1] > p[1] or q[2] > p[2])
                                          for q in points)]
    return [p[0] for p in sorted(front, key=lambda p: -p[1])]


def choose(rows: Sequence[Row], targets: Targets) -> Choice:
    """The entry meeting both targets with the largest worst-case margin (most room on the tighter promise), else
    the frontier and how far its best entries miss."""
    b = targets.batch
    frontier = pareto_frontier(rows, b)
    meeting = [r for r in rows if r.get("meets")]
    scored = [r for r in rows if r.get("margin") is not None]
    closest = max(scored, key=lambda r: r["margin"])["entry"] if scored else None
    if meeting:
        best = max(meeting, key=lambda r: (r["margin"], r[f"speedup_b{b}"]))
        return Choice(best["entry"], frontier, closest, [
            f"chosen: {best['entry']}: INT8 {best[f'speedup_b{b}']:.1f}x the FP32 teacher at batch {b} (target "
            f"{targets.speedup:g}x) at {100 * best['share']:.1f}% of its mAP (target {100 * targets.share:g}%, "
            f"{best['seeds']} seeds, worst seed {100 * best['share_min']:.1f}%)"])
    return Choice(None, frontier, closest, miss_lines(rows, targets))


def miss_lines(rows: Sequence[Row], targets: Targets) -> List[str]:
    """By how much the frontier misses: the fastest entry that keeps the accuracy, the most accurate that keeps
    the speed, and entries whose timing was unstable."""
    b = targets.batch
    lines = ["no entry meets both targets"]
    accurate = [r for r in rows if r.get("meets_accuracy") and _num(r.get(f"speedup_b{b}"))]
    fast = [r for r in rows if r.get("meets_speed") and _num(r.get("share")) and r["share"] < targets.share]
    if accurate:
        r = max(accurate, key=lambda r: r[f"speedup_b{b}"])
        x = r[f"speedup_b{b}"]
        miss = (f"misses {targets.speedup:g}x by a factor of {targets.speedup / x:.2f}" if x < targets.speedup
                else "reaches the speed-up, but its timing was unstable")
        lines.append(f"fastest at >= {100 * targets.share:g}% of the teacher's mAP: {r['entry']}, {x:.1f}x at "
                     f"batch {b}: {miss}")
    if fast:
        r = max(fast, key=lambda r: r["share"])
        gap = (targets.share - r["share"]) * r["teacher_mAP"]
        lines.append(f"most accurate at >= {targets.speedup:g}x: {r['entry']}, {100 * r['share']:.1f}% of the "
                     f"teacher's mAP: misses {100 * targets.share:g}% by {gap:.2f} mAP points")
    unstable = [r["entry"] for r in rows if _num(r.get(f"speedup_b{b}")) and not r.get(f"stable_b{b}")]
    if unstable:
        lines.append(f"timing UNSTABLE at batch {b} (not counted as meeting the speed target; rerun the speed "
                     f"phase on an idle machine): {', '.join(unstable)}")
    thin = [r["entry"] for r in rows if 0 < r.get("seeds", 0) < targets.seeds]
    if thin:
        lines.append(f"fewer than {targets.seeds} seeds (not counted): {', '.join(thin)}")
    rejected = [r["entry"] for r in rows if r.get("seeds", 0) and not r.get("int8_all_accepted")]
    if rejected:
        lines.append(f"an INT8 file rejected by its INT8-vs-FP32 gates (not counted): {', '.join(rejected)}")
    return lines


def _fmt(value, spec: str, missing: str = "-") -> str:
    return format(value, spec) if _num(value) else missing


def markdown(rows: Sequence[Row], choice: Choice, targets: Targets, kind: str, batches: Sequence[int]) -> str:
    """The README table for one CPU kind: chosen pair in bold with a star, frontier entries with a diamond."""
    size = next((r["size"] for r in rows if r.get("size")), [256, 128])
    head = (f"| entry | MACs / teacher ({size[0]}×{size[1]} · 64×32) | INT8 speed-up vs FP32 teacher "
            + " · ".join(f"b{b}" for b in batches) + f" (student runtime at b{targets.batch}) | INT8 mAP (seeds) | "
            "share of teacher "
            "mAP (worst seed) | targets |")
    teachers = [r["teacher_mAP"] for r in rows if _num(r.get("teacher_mAP"))]
    teacher = f" (synthetic teacher mAP {statistics.fmean(teachers):.1f})" if teachers else ""
    lines = [f"CPU kind: {kind}; targets: ≥ {targets.speedup:g}× at batch {targets.batch}, ≥ "
             f"{100 * targets.share:g}% of the teacher's mAP{teacher}, ≥ {targets.seeds} seeds. ★ chosen, ◆ Pareto "
             "frontier.",
             "", head, "|" + " --- |" * 6]
    for r in rows:
        mark = "★ " if r["entry"] == choice.chosen else "◆ " if r["entry"] in choice.frontier else ""
        name = f"**{mark}{r['entry']}**" if r["entry"] == choice.chosen else f"{mark}{r['entry']}"
        speed = " · ".join(_fmt(r.get(f"speedup_b{b}"), ".1f") + ("×" if _num(r.get(f"speedup_b{b}")) else "")
                           + ("" if r.get(f"stable_b{b}", True) else " (unstable)") for b in batches)
        speed += f" ({r.get(f'runtime_b{targets.batch}', '')})" if r.get(f"runtime_b{targets.batch}") else ""
        speed = speed if "speed_note" not in r else r["speed_note"]
        acc = (f"{r['int8_mAP']:.1f} ± {r['int8_mAP_std']:.1f} ({r['seeds']})" if _num(r.get("int8_mAP"))
               else r.get("accuracy_note", "-"))
        share = f"{100 * r['share']:.1f}% ({100 * r['share_min']:.1f}%)" if _num(r.get("share")) else "-"
        macs = f"{_fmt(r.get('deploy_mac_ratio'), '.3f')} · {_fmt(r.get('synthetic_mac_ratio'), '.3f')}"
        met = ("both" if r.get("meets") else "speed" if r.get("meets_speed") else "accuracy"
               if r.get("meets_accuracy") else "neither")
        lines.append(f"| {name} | {macs} | {speed} | {acc} | {share} | {met} |")
    return "\n".join(lines + [""] + [f"- {line}" for line in choice.verdict]) + "\n"


def plot(rows: Sequence[Row], choice: Choice, targets: Targets, kind: str, path: str) -> str:
    """mAP share of the teacher vs INT8 speed-up at the target batch; frontier as a step line, chosen starred; entries
    timed but without an INT8 accuracy (not trained, or stopped before INT8: said in the label) on a strip below, on
    the same speed axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    b = targets.batch
    points = [r for r in rows if _num(r.get(f"speedup_b{b}")) and _num(r.get("share"))]
    timed_only = [r for r in rows if _num(r.get(f"speedup_b{b}")) and not _num(r.get("share"))]
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(7.5, 5.6), sharex=True, gridspec_kw={"height_ratios": [5, 1]})
    for r in points:
        color = "tab:green" if r.get("meets") else "tab:blue" if r.get(f"stable_b{b}") else "tab:gray"
        ax.errorbar(r[f"speedup_b{b}"], 100 * r["share"], yerr=100 * r.get("share_std", 0.0), fmt="o", color=color,
                    capsize=3)
        ax.annotate(r["entry"], (r[f"speedup_b{b}"], 100 * r["share"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    front = sorted((r for r in points if r["entry"] in choice.frontier), key=lambda r: r[f"speedup_b{b}"])
    if front:
        ax.step([r[f"speedup_b{b}"] for r in front], [100 * r["share"] for r in front], where="post",
                color="tab:orange", label="Pareto frontier")
    chosen = [r for r in points if r["entry"] == (choice.chosen or choice.closest)]
    for r in chosen:
        ax.plot(r[f"speedup_b{b}"], 100 * r["share"], "*", markersize=18, color="tab:red",
                label=f"{'chosen' if choice.chosen else 'closest'}: {r['entry']}")
    for axis in (ax, strip):
        axis.axvline(targets.speedup, color="k", ls="--", lw=0.8)
    ax.axhline(100 * targets.share, color="k", ls="--", lw=0.8)
    for i, r in enumerate(sorted(timed_only, key=lambda r: r[f"speedup_b{b}"])):
        strip.plot(r[f"speedup_b{b}"], 0, "o", mfc="none", color="tab:gray")
        (dx, dy, ha) = ((4, 4, "left"), (4, -12, "left"), (4, 15, "left"))[i % 3]  # neighbours' labels apart
        label = r["entry"] + (" (distillation rejected)" if "distill rejected" in r.get("accuracy_note", "") else "")
        strip.annotate(label, (r[f"speedup_b{b}"], 0), textcoords="offset points", xytext=(dx, dy), ha=ha,
                       fontsize=7, color="tab:gray")
    strip.set_yticks([])
    strip.set_ylim(-1, 1)
    strip.set_ylabel("no INT8\naccuracy", fontsize=7, rotation=0, ha="right", va="center")
    strip.set_xscale("log")
    strip.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    strip.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}×"))
    strip.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    size = next((r["size"] for r in rows if r.get("size")), None)
    where = f", {size[0]}×{size[1]}" if size else ""
    strip.set_xlabel(f"INT8 student speed-up over the FP32 teacher, batch {b}{where} (best runtime each)")
    ax.set_ylabel("INT8 student mAP, % of the teacher's\n(synthetic, mean over seeds)")
    ax.set_title(f"Pair selection on {kind}", fontsize=10)
    if front or chosen:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_rows(entries: Sequence[str], speed: Dict[str, Row], accuracy: Dict[str, List[Row]],
               macs: Dict[str, Dict[str, float]], targets: Targets, batches: Sequence[int]) -> List[Row]:
    """One judged row per entry, in ladder order."""
    rows = []
    for name in entries:
        row: Row = {"entry": name, **speed_columns(speed.get(name), batches),
                    **accuracy_columns(accuracy.get(name, []))}
        if name in macs:  # the timed pair's own ratio first (it is what the speed-up belongs to)
            row["deploy_mac_ratio"] = row.get("deploy_mac_ratio") or macs[name].get("deploy_mac_ratio")
            row["synthetic_mac_ratio"] = macs[name].get("synthetic_mac_ratio")
        rows.append(judge_row(row, targets))
    return rows


def kinds_and_batches(speed: Dict[str, Dict[str, Row]]) -> Tuple[List[str], List[int]]:
    batches = sorted({int(b[1:]) for records in speed.values() for r in records.values() if r.get("status") == "ok"
                      for b in r["speedup"]})
    return sorted(speed), batches or [1, 32]
