"""Latency that can be trusted: warm-up, then timed runs until a count and a time are met.

One timed run is one ``session.run`` on fixed feeds, measured with ``perf_counter_ns``.
Runs continue until both ``min_runs`` runs and ``min_time_s`` seconds are reached (capped by
``max_runs``), so fast models get many samples and slow ones are not run forever.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, asdict
from typing import Callable

import numpy as np

NOISY_SPREAD = 0.10  # IQR / median above this means the machine was busy


@dataclass
class LatencyStats:
    """Latency percentiles (milliseconds) of a set of timed runs."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    iqr: float
    spread: float   # IQR / median
    runs: int

    @classmethod
    def from_samples(cls, samples_ms) -> "LatencyStats":
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.size == 0:
            raise ValueError("no latency samples to summarise")
        q25, p50, q75, p90, p99 = np.percentile(s, [25, 50, 75, 90, 99])
        iqr = float(q75 - q25)
        return cls(p50=float(p50), p90=float(p90), p99=float(p99), mean=float(s.mean()),
                   min=float(s.min()), max=float(s.max()), iqr=iqr,
                   spread=iqr / float(p50) if p50 > 0 else 0.0, runs=int(s.size))

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD

    def to_dict(self) -> dict:
        return asdict(self)


def time_runs(run: Callable[[], object], warmup: int = 10, min_runs: int = 50,
              min_time_s: float = 0.5, max_runs: int = 100_000) -> list[float]:
    """Call ``run`` ``warmup`` times, then time calls until both minimums are met."""
    if warmup < 0 or min_runs < 1 or min_time_s < 0:
        raise ValueError("warmup must be >= 0, min_runs >= 1 and min_time_s >= 0")
    for _ in range(warmup):
        run()
    samples: list[float] = []
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(min_time_s * 1e9)
    while len(samples) < max_runs:
        t0 = clock()
        run()
        t1 = clock()
        samples.append((t1 - t0) / 1e6)
        if len(samples) >= min_runs and t1 >= deadline:
            break
    return samples


def measure_latency(session, feeds: dict, warmup: int = 10, min_runs: int = 50,
                    min_time_s: float = 0.5, max_runs: int = 100_000) -> LatencyStats:
    """Latency of ``session.run(None, feeds)`` on the CPU path (host inputs)."""
    return LatencyStats.from_samples(
        time_runs(lambda: session.run(None, feeds), warmup, min_runs, min_time_s, max_runs))
