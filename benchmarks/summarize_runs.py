"""Summarise run folders' metrics.json as mean ± std over seeds (a Markdown table row per model).

    python benchmarks/summarize_runs.py output/ev/r50ibn_s0 output/ev/r50ibn_s1 ... --label R50-IBN
    python benchmarks/summarize_runs.py --group output/ev   # every <name>_s<seed> folder, grouped by name
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
from collections import defaultdict
from typing import Dict, List

METRICS = ("mAP", "rank1", "mINP", "black_mAP", "black_rank1", "train_images_per_second")


def read_metrics(folder: str) -> Dict[str, float]:
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as handle:
        return json.load(handle)


def cell(values: List[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def row(label: str, folders: List[str]) -> str:
    runs = [read_metrics(f) for f in folders]
    seeds = [re.search(r"_s(\d+)$", f.rstrip("/")).group(1) for f in folders]
    per_seed_map = " / ".join(f"{r['mAP']:.1f}" for r in runs)
    cells = [cell([r[m] for r in runs if m in r]) for m in METRICS]
    return f"| {label} | {', '.join(seeds)} | " + " | ".join(cells) + f" | {per_seed_map} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*")
    parser.add_argument("--label", default="model")
    parser.add_argument("--group", default="", help="folder of <name>_s<seed> run folders")
    args = parser.parse_args()
    print("| model | seeds | " + " | ".join(METRICS) + " | mAP per seed |")
    print("|" + " --- |" * (len(METRICS) + 3))
    if args.group:
        groups = defaultdict(list)
        for name in sorted(os.listdir(args.group)):
            match = re.fullmatch(r"(.+)_s\d+", name)
            path = os.path.join(args.group, name)
            if match and os.path.isfile(os.path.join(path, "metrics.json")):
                groups[match.group(1)].append(path)
        for label, folders in groups.items():
            print(row(label, folders))
    else:
        print(row(args.label, args.folders))


if __name__ == "__main__":
    main()
