"""A long loop's progress in the log, with the time spent and an estimate of the time left: what a run under
nohup, CI or a scheduler shows where no terminal draws a tqdm bar (the bar stays for terminals)."""

from __future__ import annotations

import logging
import math
import time
from typing import Callable


def duration(seconds: float) -> str:
    """``42s``, ``3m07s`` or ``1h05m``."""
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class LoggedProgress:
    """Logs ``<what>: <done>/<total> <unit>, <elapsed> elapsed, about <left> left`` after each ``total / parts``
    steps and after the last one, once the loop has run ``quiet_for`` seconds (a short loop logs nothing); the time
    left extrapolates the mean step so far.

    Args:
        clock: seconds, monotonic (``time.monotonic``; tests pass their own).
    """

    def __init__(self, logger: logging.Logger, what: str, total: int, unit: str = "", parts: int = 10,
                 quiet_for: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.logger, self.what, self.total, self.unit, self.clock = logger, what, total, unit, clock
        self.every = max(1, math.ceil(total / max(1, parts)))
        self.quiet_for = quiet_for
        self.done = 0
        self.start = clock()

    def step(self) -> None:
        self.done += 1
        if self.done % self.every and self.done != self.total:
            return
        elapsed = self.clock() - self.start
        if elapsed < self.quiet_for:
            return
        left = elapsed / self.done * max(0, self.total - self.done)
        self.logger.info("%s: %d/%d%s, %s elapsed, about %s left", self.what, self.done, self.total,
                         f" {self.unit}" if self.unit else "", duration(elapsed), duration(left))
