"""Latency statistics and the timing loop: counts, time budget, caps, noise flag."""

import gc
import time

import pytest

from edgepack.bench.latency import NOISY_SPREAD, LatencyStats, RunTimer, time_runs


def test_stats_from_known_samples():
    stats = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 5.0])
    assert stats.p50 == 3.0 and stats.min == 1.0 and stats.max == 5.0 and stats.mean == 3.0
    assert stats.iqr == pytest.approx(2.0)
    assert stats.spread == pytest.approx(2.0 / 3.0)
    assert stats.noisy and stats.runs == 5


def test_steady_samples_are_not_noisy():
    stats = LatencyStats.from_samples([1.0] * 50 + [1.01] * 50)
    assert stats.spread < NOISY_SPREAD and not stats.noisy
    assert set(stats.to_dict()) >= {"p50", "p90", "p99", "mean", "min", "spread", "runs"}


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="no latency samples"):
        LatencyStats.from_samples([])


def test_runs_until_both_count_and_time_are_reached():
    samples = time_runs(lambda: time.sleep(0.001), warmup=0, min_runs=3, min_time_s=0.05,
                        block_runs=1)
    assert len(samples) > 3  # the count alone would have stopped at 3
    assert sum(samples) >= 50.0  # the timed runs add up to the minimum time


def test_slow_runs_stop_at_the_minimum_count():
    samples = time_runs(lambda: time.sleep(0.002), warmup=0, min_runs=4, min_time_s=0.0,
                        block_runs=1)
    assert len(samples) == 4
    assert min(samples) >= 2.0


def test_max_runs_caps_the_count_even_mid_block():
    timer = RunTimer(lambda: None, min_runs=1, min_time_s=60.0, max_runs=7)
    while not timer.done():
        timer.time_block(5)
    assert len(timer.samples_ns) == 7


def test_warmup_calls_are_not_timed():
    calls = []
    samples = time_runs(lambda: calls.append(1), warmup=3, min_runs=2, min_time_s=0.0,
                        block_runs=1)
    assert len(calls) == 3 + len(samples)


def test_garbage_collector_is_restored_after_a_block():
    assert gc.isenabled()
    RunTimer(lambda: None, min_runs=1, min_time_s=0).time_block(3)
    assert gc.isenabled()


@pytest.mark.parametrize("kwargs", [{"warmup": -1}, {"min_runs": 0}, {"min_time_s": -1.0}])
def test_bad_budget_is_rejected(kwargs):
    with pytest.raises(ValueError):
        time_runs(lambda: None, **kwargs)
