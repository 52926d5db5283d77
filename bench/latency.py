"""Latency that can be trusted: warm-up, then timed runs until a count and a time are met.

One timed run is one call of a no-argument ``run`` (for the CPU path ``session.run(None,
feeds)``), measured with ``perf_counter_ns``. Runs continue until both ``min_runs`` runs and
``min_time_s`` seconds of timed runs are reached (capped by ``max_runs``), so fast models get
many samples and slow ones are not run forever. The timing loop is kept minimal (bound
methods, integer nanoseconds, the garbage collector paused as ``timeit`` does) so the harness
adds as little as possible to what it measures; ``benchmarks/bench_overhead.py`` checks that.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
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
        """True when the spread is above :data:`NOISY_SPREAD` (a busy machine)."""
        return self.spread > NOISY_SPREAD

    def to_dict(self) -> dict:
        return asdict(self)


class RunTimer:
    """Times calls of one ``run`` in blocks, so several timers can be interleaved.

    ``budget`` is ``(min_runs, min_time_s, max_runs)``: :meth:`done` is true once both
    minimums are met, or ``max_runs`` runs were taken.
    """

    def __init__(self, run: Callable[[], object], min_runs: int = 50, min_time_s: float = 0.5,
                 max_runs: int = 100_000):
        if min_runs < 1 or min_time_s < 0 or max_runs < 1:
            raise ValueError("min_runs must be >= 1, min_time_s >= 0 and max_runs >= 1")
        self.run = run
        self.min_runs, self.min_time_ns, self.max_runs = min_runs, int(min_time_s * 1e9), max_runs
        self.samples_ns: list[int] = []
        self.elapsed_ns = 0

    def time_block(self, runs: int) -> None:
        """Time up to ``runs`` calls (fewer if ``max_runs`` is reached)."""
        runs = min(runs, self.max_runs - len(self.samples_ns))
        first = len(self.samples_ns)
        run, clock, append = self.run, time.perf_counter_ns, self.samples_ns.append
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(runs):
                t0 = clock()
                run()
                t1 = clock()
                append(t1 - t0)
        finally:
            if gc_was_enabled:
                gc.enable()
        self.elapsed_ns += sum(self.samples_ns[first:])

    def done(self) -> bool:
        n = len(self.samples_ns)
        return n >= self.max_runs or (n >= self.min_runs and self.elapsed_ns >= self.min_time_ns)

    @property
    def samples_ms(self) -> list[float]:
        return [ns / 1e6 for ns in self.samples_ns]

    def stats(self) -> LatencyStats:
        return LatencyStats.from_samples(self.samples_ms)


def warm_up(run: Callable[[], object], warmup: int) -> None:
    """Call ``run`` ``warmup`` times, untimed (caches, allocator arenas, lazy kernels)."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        run()


def time_runs(run: Callable[[], object], warmup: int = 10, min_runs: int = 50,
              min_time_s: float = 0.5, max_runs: int = 100_000,
              block_runs: int = 10) -> list[float]:
    """Warm up, then time calls of ``run`` until both minimums are met; samples in ms."""
    warm_up(run, warmup)
    timer = RunTimer(run, min_runs, min_time_s, max_runs)
    while not timer.done():
        timer.time_block(block_runs)
    return timer.samples_ms


def measure_latency(session, feeds: dict, warmup: int = 10, min_runs: int = 50,
                    min_time_s: float = 0.5, max_runs: int = 100_000) -> LatencyStats:
    """Latency of ``session.run(None, feeds)`` on the host path, with the harness's loop."""
    run = session.run
    return LatencyStats.from_samples(
        time_runs(lambda: run(None, feeds), warmup, min_runs, min_time_s, max_runs))
