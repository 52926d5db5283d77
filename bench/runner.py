"""Benchmark ONNX models: latency, accuracy, memory and size, on the provider asked for.

:func:`bench` takes one or more model paths and a :class:`BenchConfig`. Models are timed
interleaved (A B A B ...), in blocks, so a machine that drifts (thermal throttling, another
process) favours none of them. Each result is a plain dict, the JSON that
``edgepack bench --json`` writes.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, asdict
from pathlib import Path

import numpy as np
import psutil

from bench.inputs import batches, check_feeds, generate_inputs, load_npz
from bench.latency import LatencyStats, NOISY_SPREAD
from bench.session import GRAPH_OPTIMIZATION_LEVELS, SessionOptions, make_session, provider_name
from export.onnx_checks import load_onnx_header, model_size_bytes, parameter_count

PROFILES = {
    # One core, no busy-waiting: how a phone or a small ARM board runs a model in the background.
    "edge": {"threads": 1, "inter_op_threads": 1, "spin_wait": False, "sequential": True},
    # Lowest latency on a dedicated core set: spinning threads answer faster.
    "server": {"threads": 0, "inter_op_threads": 0, "spin_wait": True, "sequential": True},
}


@dataclass
class BenchConfig:
    """What to measure and how. Defaults are quick; raise the minimums for papers."""

    provider: str = "cpu"
    threads: int = 1
    inter_op_threads: int = 1
    sequential: bool = True
    spin_wait: bool = True
    graph_optimization: str = "all"
    no_cpu_fallback: bool = False
    batch: int = 1
    warmup: int = 10
    min_runs: int = 50
    min_time_s: float = 0.5
    max_runs: int = 100_000
    block_runs: int = 10
    shapes: dict = field(default_factory=dict)   # {"input_ids": [1, 128]}
    io_binding: bool = True                      # on CUDA, time without host copies

    def __post_init__(self):
        if self.graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise ValueError(f"bench.graph_optimization={self.graph_optimization!r} is not "
                             f"valid; expected one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}")
        for name in ("threads", "inter_op_threads", "warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"bench.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch", "min_runs", "block_runs", "max_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"bench.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_time_s < 0:
            raise ValueError(f"bench.min_time_s must be >= 0, got {self.min_time_s}")

    @classmethod
    def with_profile(cls, profile: str, **overrides) -> "BenchConfig":
        if profile not in PROFILES:
            raise ValueError(f"unknown bench profile {profile!r}; expected one of "
                             f"{', '.join(PROFILES)}")
        return cls(**{**PROFILES[profile], **overrides})

    def session_options(self) -> SessionOptions:
        return SessionOptions(provider=self.provider, threads=self.threads,
                              inter_op_threads=self.inter_op_threads, sequential=self.sequential,
                              spin_wait=self.spin_wait, graph_optimization=self.graph_optimization,
                              no_cpu_fallback=self.no_cpu_fallback)

    def to_dict(self) -> dict:
        return asdict(self)


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


class _Timed:
    """One model under test: its session, feeds, runner and samples."""

    def __init__(self, path: Path, config: BenchConfig, data: dict | None):
        self.path = path
        self.config = config
        gc.collect()
        self.rss_before = _rss_mb()
        t0 = time.perf_counter()
        self.session = make_session(path, config.session_options())
        self.session_create_ms = (time.perf_counter() - t0) * 1e3
        if data is not None:
            feeds = check_feeds(self.session, data, "evaluation data")
            self.feeds = {k: v[: config.batch] for k, v in feeds.items()}
        else:
            self.feeds = generate_inputs(self.session, config.batch, config.shapes)
        self.run = self._make_runner()
        t0 = time.perf_counter()
        self.run()
        self.first_inference_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(config.warmup):
            self.run()
        self.samples: list[float] = []
        self.elapsed_ns = 0

    def _make_runner(self):
        """A no-argument call doing one inference; on CUDA with IO binding, no host copies."""
        full = self.session.get_providers()[0]
        if full == "CUDAExecutionProvider" and self.config.io_binding:
            import onnxruntime as ort

            binding = self.session.io_binding()
            for name, value in self.feeds.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
            for out in self.session.get_outputs():
                binding.bind_output(out.name, "cuda", 0)

            def run():
                binding.synchronize_inputs()
                self.session.run_with_iobinding(binding)
                binding.synchronize_outputs()
            return run
        feeds = self.feeds
        session = self.session
        return lambda: session.run(None, feeds)

    def time_block(self, runs: int) -> None:
        clock = time.perf_counter_ns
        for _ in range(runs):
            t0 = clock()
            self.run()
            t1 = clock()
            self.samples.append((t1 - t0) / 1e6)
            self.elapsed_ns += t1 - t0

    def done(self) -> bool:
        c = self.config
        return len(self.samples) >= c.max_runs or (
            len(self.samples) >= c.min_runs and self.elapsed_ns >= c.min_time_s * 1e9)


def node_assignment(path: Path, config: BenchConfig, feeds: dict) -> dict[str, int]:
    """How many graph nodes each execution provider ran, read from one profiled run."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = str(Path(tmp) / "profile")
        full = provider_name(config.provider)
        providers = [full] if full == "CPUExecutionProvider" else [full, "CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        session.run(None, feeds)
        profile = session.end_profiling()
        events = json.loads(Path(profile).read_text())
    nodes: dict[str, str] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            nodes[event["name"].rsplit("_kernel_time", 1)[0]] = args["provider"]
    return dict(Counter(nodes.values()))


def evaluate_accuracy(session, feeds: dict, labels: np.ndarray, batch: int) -> float:
    """Top-1 accuracy of the first output over all rows, run in batches."""
    correct = 0
    for start, stop, chunk in batches(feeds, batch):
        logits = session.run(None, chunk)[0]
        correct += int((logits.reshape(stop - start, -1).argmax(1) == labels[start:stop]).sum())
    return correct / len(labels)


def evaluate_reference(session, feeds: dict, reference: np.ndarray, batch: int) -> dict:
    """Errors against reference outputs: max/mean absolute error, mean cosine similarity."""
    outs = [session.run(None, chunk)[0] for _, _, chunk in batches(feeds, batch)]
    actual = np.concatenate(outs).astype(np.float64).reshape(len(reference), -1)
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    if actual.shape != ref.shape:
        raise ValueError(f"reference outputs have shape {list(reference.shape)}; the model "
                         f"gives {list(actual.shape)}")
    diff = np.abs(actual - ref)
    cos = (actual * ref).sum(1) / np.maximum(
        np.linalg.norm(actual, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    return {"max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean()),
            "mean_cosine": float(cos.mean())}


def _result(timed: _Timed, config: BenchConfig, data: dict | None) -> dict:
    stats = LatencyStats.from_samples(timed.samples)
    header = load_onnx_header(timed.path)
    result = {
        "model": str(timed.path),
        "provider": timed.session.get_providers()[0],
        "providers": timed.session.get_providers(),
        "threads": config.threads,
        "batch": config.batch,
        "latency_ms": stats.to_dict(),
        "noisy": stats.noisy,
        "session_create_ms": timed.session_create_ms,
        "first_inference_ms": timed.first_inference_ms,
        "size_bytes": model_size_bytes(timed.path),
        "params": parameter_count(header),
        "memory_mb": {"rss_before": timed.rss_before, "rss_after": _rss_mb(),
                      "session": max(0.0, _rss_mb() - timed.rss_before)},
        "nodes_per_provider": node_assignment(timed.path, config, timed.feeds),
    }
    if config.batch > 1:
        result["throughput_per_s"] = config.batch * 1e3 / stats.p50
    if data is not None:
        feeds = check_feeds(timed.session, data, "evaluation data")
        if "labels" in data:
            result["accuracy"] = evaluate_accuracy(timed.session, feeds, data["labels"],
                                                   max(config.batch, 64))
        if "reference" in data:
            result["reference"] = evaluate_reference(timed.session, feeds, data["reference"],
                                                     max(config.batch, 16))
    if stats.noisy:
        result["warning"] = (f"latency spread (IQR/median) {stats.spread:.0%} is above "
                             f"{NOISY_SPREAD:.0%}: the machine is noisy; close other work "
                             "or raise --min-time")
    return result


def bench(models, config: BenchConfig | None = None, data=None) -> list[dict]:
    """Benchmark each model (interleaved); ``data`` is a dict of arrays or an ``.npz`` path."""
    config = config or BenchConfig()
    paths = [Path(m) for m in ([models] if isinstance(models, (str, os.PathLike)) else models)]
    if not paths:
        raise ValueError("no model to benchmark")
    if isinstance(data, (str, os.PathLike)):
        data = load_npz(data)
    timed = [_Timed(p, config, data) for p in paths]
    # Every model keeps running until all are done, so all share the same conditions.
    while not all(t.done() for t in timed):
        for t in timed:
            if len(t.samples) < config.max_runs:
                t.time_block(config.block_runs)
    return [_result(t, config, data) for t in timed]
