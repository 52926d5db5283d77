"""Benchmarks on ONNX Runtime: latency, accuracy, memory and size, on the EP asked for."""

from bench.latency import LatencyStats, measure_latency, time_runs
from bench.runner import BenchConfig, bench
from bench.session import ProviderError, SessionOptions, make_session

__all__ = ["BenchConfig", "LatencyStats", "ProviderError", "SessionOptions", "bench",
           "make_session", "measure_latency", "time_runs"]
