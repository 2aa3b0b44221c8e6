"""How often the quantize run's speed verdict (compressreid.quant.speed) says "slower", measured on a finished run.

The run calls an INT8 file slower than its FP32 model only when it lost every timing round at the deployment batch;
``QUANT.BENCHMARK.WHEN_SLOWER ship_fp32`` then ships FP32. This script repeats that exact decision many times in
the target's runtime, with the run's own QUANT.BENCHMARK, on two pairs:

- A/A: the FP32 file against a second instance of itself. Equal by construction, so every "slower" (or "faster")
  is a false verdict: how often a level file would ship FP32 by the machine's noise alone.
- INT8/FP32: the target's INT8 file against the FP32 file, as the run timed them (without the all-INT8 file a
  fallback run also times in the same rounds): how often the verdict comes out each way for this model on this
  machine (a decision that flips from run to run shows here).

    python benchmarks/speed_verdict.py output/q19/osnet_ptq --target openvino --repeats 100

Timing belongs here, not in tests: run it on a quiet machine and name the CPU with the numbers (printed).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
from typing import Dict, List

from compressreid.config.loading import load_config
from compressreid.errors import CompressReIDError, ConfigError
from compressreid.export.conventions import DEFAULT_CONVENTION, get_convention
from compressreid.export.cpu import cpu_flags, this_kind
from compressreid.quant.outcome import FP32_FILE
from compressreid.quant.speed import SpeedPolicy, speed_verdict, time_against_fp32
from compressreid.quant.targets.registry import QUANT_TARGETS


def int8_file(folder: str, target: str) -> str:
    """The target's INT8 file in a finished quantize run (its card names it; shipped or rejected)."""
    with open(os.path.join(folder, "model_card.json"), encoding="utf-8") as f:
        card = json.load(f)
    for entry in [card, *card.get("targets", [])]:
        if entry.get("target", {}).get("target") == target:
            name = entry.get("shipping", {}).get("int8_model", entry.get("model"))
            if not name:
                raise ConfigError(f"{folder}/model_card.json: the entry of target '{target}' names no model")
            return os.path.join(folder, name)
    raise ConfigError(f"{folder}: the run has no target '{target}' (model_card.json)")


def verdicts(policy: SpeedPolicy, candidate, baseline, input_size, convention, baseline_convention,
             repeats: int) -> Dict[str, object]:
    """The verdict at the policy's deployment batch, ``repeats`` times (each file fed in its convention): counts and
    the median speed-ups."""
    counts: collections.Counter = collections.Counter()
    medians: List[float] = []
    for _ in range(repeats):
        latency = time_against_fp32(policy, candidate, baseline, input_size, convention, baseline_convention)
        counts[speed_verdict(latency, policy.deploy_batch)] += 1
        medians.append(latency[f"speedup_batch{policy.deploy_batch}"])
    return {"repeats": repeats, **{k: counts.get(k, 0) for k in ("slower", "level", "faster")},
            "speedup_median": round(statistics.median(medians), 3),
            "speedup_spread": [round(min(medians), 3), round(max(medians), 3)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished quantize run folder (config.yaml, student_fp32.onnx, model_card.json)")
    parser.add_argument("--target", default="ort_portable", help="whose file and runtime (default ort_portable)")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=0, help="QUANT.BENCHMARK.ROUNDS to try (0: the run's)")
    parser.add_argument("--iters", type=int, default=0, help="QUANT.BENCHMARK.ITERS to try (0: the run's)")
    parser.add_argument("--json", default="", help="also write the numbers here")
    args = parser.parse_args()
    try:
        cfg = load_config(os.path.join(args.run, "config.yaml"))
        if args.target not in QUANT_TARGETS:
            raise ConfigError(f"unknown target '{args.target}'; valid: {', '.join(QUANT_TARGETS.names())}")
        if args.repeats < 1 or args.rounds < 0 or args.iters < 0:
            raise ConfigError(f"--repeats must be >= 1 and --rounds / --iters >= 0, got {args.repeats}, "
                              f"{args.rounds}, {args.iters}")
        target = QUANT_TARGETS.get(args.target).from_config(cfg)
        target.check_available()
        if target.measured_kind() != this_kind():
            stands_for = getattr(target.measured_kind(), "name", "a device this machine does not have")
            raise ConfigError(f"target {args.target}: its runtime here does not run or only stands in for "
                              f"{stands_for}; the run records no speed-up for it on this CPU")
        int8 = int8_file(args.run, args.target)
        policy = SpeedPolicy.from_config(cfg.QUANT.BENCHMARK)
        policy = SpeedPolicy((policy.deploy_batch,), args.iters or policy.iters, args.rounds or policy.rounds,
                             policy.threads, policy.deploy_batch, policy.when_slower)
        size = tuple(int(v) for v in cfg.INPUT.SIZE_TEST)
        fp32_path = os.path.join(args.run, FP32_FILE)
        # the run's FP32 file takes RGB 0..255 when it was exported from a run folder; an ONNX source's convention
        # is every target's (the run refuses others), and the first affine op the conventions differ by costs nothing
        fp32_convention = target.convention if cfg.QUANT.SOURCE.endswith(".onnx") else get_convention(
            DEFAULT_CONVENTION)
        models = {name: target.runtime_model(path, policy.threads) for name, path in
                  (("fp32", fp32_path), ("fp32_again", fp32_path), ("int8", int8))}
    except (CompressReIDError, OSError, ValueError) as exc:  # a bad card (JSON) is a ValueError
        print(f"speed_verdict.py: {exc}", file=sys.stderr)
        return 2
    flags = sorted(f for f, present in cpu_flags().items() if present)
    print(f"CPU features: {', '.join(flags) or 'none of avx2/avx512/vnni/amx'}; {target.runtime}, {size[0]}x{size[1]}, "
          f"batch {policy.deploy_batch}, {policy.timed_rounds} rounds x {policy.calls} calls, threads "
          f"{policy.threads or 'default'}")
    out = {"cpu_flags": flags, "runtime": target.runtime, "input_size": list(size), "batch": policy.deploy_batch,
           "rounds": policy.timed_rounds, "calls": policy.calls}
    for name, candidate, convention in (("a_a", models["fp32_again"], fp32_convention),
                                        ("int8_fp32", models["int8"], target.convention)):
        out[name] = verdicts(policy, candidate, models["fp32"], size, convention, fp32_convention, args.repeats)
        r = out[name]
        print(f"{name:>9}: slower {r['slower']:3d}  level {r['level']:3d}  faster {r['faster']:3d}  of {r['repeats']}"
              f"; median speed-up {r['speedup_median']:.3f} ({r['speedup_spread'][0]:.3f}-{r['speedup_spread'][1]:.3f})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
