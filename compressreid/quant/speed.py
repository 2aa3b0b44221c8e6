"""How fast a target's INT8 file runs against its FP32 source in the target's runtime, and which of the two the target
ships (QUANT.BENCHMARK).

INT8 does not always pay: at batch 1 the depthwise students ran slower in INT8 than in FP32 (docs/results/speed.md,
"INT8 speed of the depthwise students"), and a tiny input is overhead-bound. Both files are timed in turn, round by
round, so a shared machine's drift cancels in the per-round ratios, and a verdict is "slower" (or "faster") only when
every round agrees: a ratio that straddles 1 from round to round never changes what ships.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from yacs.config import CfgNode

from compressreid.errors import ConfigError
from compressreid.export.conventions import InputConvention
from compressreid.export.latency import interleaved_latency, latency_summary, measure_module_latency
from compressreid.export.onnx_export import example_images

WHEN_SLOWER = ("warn", "ship_fp32")


@dataclass(frozen=True)
class SpeedPolicy:
    """QUANT.BENCHMARK as data: where to time, how much, and what a target does when INT8 is slower."""

    batches: Tuple[int, ...]
    iters: int
    rounds: int
    threads: int
    deploy_batch: int
    when_slower: str

    @classmethod
    def from_config(cls, b: CfgNode) -> "SpeedPolicy":
        return cls(tuple(int(n) for n in b.BATCHES), int(b.ITERS), int(b.ROUNDS), int(b.THREADS),
                   int(b.DEPLOY_BATCH), str(b.WHEN_SLOWER))

    @property
    def timed_rounds(self) -> int:
        """Rounds actually timed: no more than ITERS, so each has at least one call."""
        return min(self.rounds, self.iters)

    @property
    def calls(self) -> int:
        """Timed calls of each file per round: ITERS spread over the rounds."""
        return math.ceil(self.iters / self.timed_rounds)


def check_speed_policy(b: CfgNode) -> None:
    """Refuse, before any work, a QUANT.BENCHMARK the run cannot time or decide on.

    Raises:
        ConfigError: naming the key and what was expected.
    """
    if not b.BATCHES or any(n < 1 for n in b.BATCHES):
        raise ConfigError(f"QUANT.BENCHMARK.BATCHES must be positive batch sizes, got {list(b.BATCHES)}")
    if b.ITERS < 1 or b.ROUNDS < 1:
        raise ConfigError(f"QUANT.BENCHMARK.ITERS and ROUNDS must be >= 1, got {b.ITERS} and {b.ROUNDS}")
    if b.WHEN_SLOWER not in WHEN_SLOWER:
        raise ConfigError(f"QUANT.BENCHMARK.WHEN_SLOWER '{b.WHEN_SLOWER}' is unknown; expected one of {WHEN_SLOWER}")
    if b.DEPLOY_BATCH not in b.BATCHES:
        raise ConfigError(f"QUANT.BENCHMARK.DEPLOY_BATCH {b.DEPLOY_BATCH} is not one of QUANT.BENCHMARK.BATCHES "
                          f"{list(b.BATCHES)}: the run decides at a batch size it times")


def time_alone(policy: SpeedPolicy, model, input_size, convention: InputConvention) -> Dict[str, Dict[str, float]]:
    """Latency at each batch of one runtime model (``None``: it does not run here, nothing timed)."""
    if model is None:
        return {}
    return {f"batch{n}": measure_module_latency(model, input_size, n, policy.iters, convention.from_rgb255)
            for n in policy.batches}


def time_against_fp32(policy: SpeedPolicy, int8, fp32, input_size, int8_convention: InputConvention,
                      fp32_convention: InputConvention, also: Optional[Dict[str, object]] = None
                      ) -> Dict[str, object]:
    """The INT8 and the FP32 runtime model timed in turn at each batch, each fed in its own input convention;
    ``also``: more models in the INT8 file's convention timed in the same rounds (name -> model).

    Returns:
        ``int8``, ``fp32`` and each name of ``also``: batch -> latency summary over all calls;
        ``speedup_batch<N>``: the median over rounds of FP32 time / INT8 time (each the round's median call);
        ``speedup_batch<N>_range``: the smallest and the largest round's.
    """
    also = also or {}
    out: Dict[str, object] = {"int8": {}, "fp32": {}, **{name: {} for name in also}}
    for n in policy.batches:
        images = example_images(input_size, n)
        fed = int8_convention.from_rgb255(images)
        fp32_rounds, int8_rounds, *others = interleaved_latency(
            [fp32, int8, *also.values()], [fp32_convention.from_rgb255(images), fed, *[fed] * len(also)],
            policy.timed_rounds, policy.calls)
        for name, rounds in (("fp32", fp32_rounds), ("int8", int8_rounds), *zip(also, others)):
            out[name][f"batch{n}"] = latency_summary([t for r in rounds for t in r], n)
        ratios = [statistics.median(f) / statistics.median(i) for f, i in zip(fp32_rounds, int8_rounds)]
        out[f"speedup_batch{n}"] = round(statistics.median(ratios), 2)
        out[f"speedup_batch{n}_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
    return out


def slower_batches(latency: Dict[str, object]) -> Dict[str, float]:
    """Batch size -> speed-up for the batches where the INT8 file ran slower than the FP32 source file in the same
    runtime, the target's (the card's ``speedup_batch<N>`` below 1)."""
    return {key[len("speedup_batch"):]: value for key, value in latency.items()
            if key.startswith("speedup_batch") and isinstance(value, (int, float)) and value < 1.0}


def speed_verdict(latency: Dict[str, object], batch: int) -> Optional[str]:
    """"slower" / "faster" when INT8 was slower / faster than FP32 at ``batch`` in every round, "level" when the
    rounds disagree, None when the two were not timed against each other here."""
    span: Optional[List[float]] = latency.get(f"speedup_batch{batch}_range")  # type: ignore[assignment]
    if not span:
        return None
    return "slower" if span[1] < 1.0 else "faster" if span[0] > 1.0 else "level"


def shipping_decision(policy: SpeedPolicy, latency: Dict[str, object], accepted: bool) -> Dict[str, object]:
    """Which precision the target ships: FP32 when WHEN_SLOWER is ship_fp32 (the default), the INT8 file passed its
    gates (a rejected file fails the run as it is) and INT8 was slower at the deployment batch in every round."""
    verdict = speed_verdict(latency, policy.deploy_batch)
    fp32 = accepted and verdict == "slower" and policy.when_slower == "ship_fp32"
    return {"ships": "fp32" if fp32 else "int8", "deploy_batch": policy.deploy_batch,
            "int8_vs_fp32": verdict or "not timed against FP32 here", "when_slower": policy.when_slower,
            **({"speedup": latency[f"speedup_batch{policy.deploy_batch}"],
                "speedup_range": latency[f"speedup_batch{policy.deploy_batch}_range"]} if verdict else {})}
