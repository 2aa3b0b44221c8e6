import logging

from compressreid.engine.progress import LoggedProgress, duration

logger = logging.getLogger("test_progress")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_duration_reads_as_seconds_minutes_or_hours():
    assert [duration(s) for s in (0, 42.4, 187, 3900, -1)] == ["0s", "42s", "3m07s", "1h05m", "0s"]


def test_a_long_loop_logs_every_tenth_with_the_time_left(caplog):
    clock = Clock()
    progress = LoggedProgress(logger, "layer sensitivity", 20, "nodes", quiet_for=30.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test_progress"):
        for _ in range(20):
            clock.now += 10.0  # 10 s a step: quiet for the first 30 s
            progress.step()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "layer sensitivity: 4/20 nodes, 40s elapsed, about 2m40s left"
    assert [line.split(",")[0] for line in lines] == [f"layer sensitivity: {n}/20 nodes" for n in range(4, 21, 2)]
    assert lines[-1] == "layer sensitivity: 20/20 nodes, 3m20s elapsed, about 0s left"


def test_a_short_loop_logs_nothing_and_an_odd_total_still_logs_its_last_step(caplog):
    clock = Clock()
    quick = LoggedProgress(logger, "quick", 5, clock=clock)
    slow = LoggedProgress(logger, "slow", 7, quiet_for=0.0, parts=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="test_progress"):
        for _ in range(5):
            clock.now += 1.0
            quick.step()
        for _ in range(7):
            clock.now += 1.0
            slow.step()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["slow: 3/7", "slow: 6/7", "slow: 7/7"]
