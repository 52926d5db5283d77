"""Benchmarks on ONNX Runtime: latency, accuracy, memory and size, on the EP asked for."""

from edgepack.bench.latency import LatencyStats, RunTimer, measure_latency, time_runs
from edgepack.bench.runner import PROFILES, BenchConfig, bench
from edgepack.bench.session import ProviderError, SessionOptions, make_session

__all__ = ["PROFILES", "BenchConfig", "LatencyStats", "ProviderError", "RunTimer",
           "SessionOptions", "bench", "make_session", "measure_latency", "time_runs"]
