"""Benchmark ONNX models: latency, accuracy, memory and size, on the provider asked for.

:func:`bench` takes one or more model paths and a :class:`BenchConfig`. Models are timed
interleaved (A B, then B A, in blocks), so a machine that drifts (thermal throttling,
another process) favours none of them. Each result is a plain dict, the JSON that
``edgepack bench --json`` writes; :data:`RESULT_KEYS` are the keys other tools rely on.
What the outputs say on evaluation data (accuracy, errors against reference outputs) is
:mod:`edgepack.bench.output_quality`.

Example::

    >>> results = bench(["small.onnx", "small.int8.onnx"], BenchConfig(threads=1))
    >>> results[1]["latency_ms"]["p50"] / results[0]["latency_ms"]["p50"]   # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgepack.bench.inputs import (check_feeds, generate_inputs, load_npz, timing_feeds,
                                   token_vocab_sizes)
from edgepack.bench.ir_version import lower_to_runtime
from edgepack.bench.latency import NOISY_SPREAD, RunTimer, warm_up
from edgepack.bench.memory import GpuMemory, PeakRSS, rss_mb
from edgepack.bench.output_quality import EVAL_BATCH, nonfinite_rows, output_quality
from edgepack.bench.resources import check_fits, data_feed_bytes, generated_feed_bytes
from edgepack.bench.session import (ProviderError, SessionOptions, make_session, nodes_per_provider,
                                    provider_name, require_provider, run_failure)
from edgepack.core.checks import (MAX_RUNS, MAX_SECONDS, check_budget, check_finite_fields,
                                  check_number, did_you_mean)
from edgepack.core.onnx_files import (check_onnx_file, load_onnx_header, model_size_bytes,
                                      parameter_count)
from edgepack.core.stage import option

RESULT_KEYS = ("model", "provider", "providers", "threads", "batch", "latency_ms",
               "size_bytes", "params", "accuracy", "nodes_per_provider", "memory_mb")

PROFILES = {
    # One core, no busy-waiting: a phone or a small ARM board running a model in the background.
    "edge": {"threads": 1, "inter_op_threads": 1, "spin_wait": False, "sequential": True},
    # Two cores, no busy-waiting: a small board given a pair of cores.
    "edge-2cores": {"threads": 2, "inter_op_threads": 1, "spin_wait": False, "sequential": True},
    # Lowest latency on a dedicated machine: all cores, spinning threads answer faster.
    "server": {"threads": 0, "inter_op_threads": 0, "spin_wait": True, "sequential": True},
}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


@dataclass
class BenchConfig:
    """What to measure and how. Defaults are quick; raise the minimums for papers."""

    provider: str = option("cpu", "cpu, cuda, or any ONNX Runtime provider name")
    threads: int = option(1, "intra-op threads; 0 lets ONNX Runtime choose")
    inter_op_threads: int = option(1, "inter-op threads")
    sequential: bool = option(True, "ORT_SEQUENTIAL execution (--no-sequential: ORT_PARALLEL)")
    spin_wait: bool = option(True, "threads busy-wait between ops; off saves power")
    graph_optimization: str = option("all", "graph optimization level",
                                     choices=("disable", "basic", "extended", "all"))
    no_cpu_fallback: bool = option(False, "fail rather than run unsupported nodes on the CPU")
    batch: int = option(1, "rows per run")
    warmup: int = option(10, f"untimed runs first (0 to {MAX_RUNS:,})")
    min_runs: int = option(100, f"timed runs at least (1 to {MAX_RUNS:,})")
    min_time_s: float = option(0.5, f"timed seconds per model at least "
                               f"(0 to {MAX_SECONDS:,.0f})")
    max_runs: int = option(100_000, f"timed runs at most (1 to {MAX_RUNS:,})")
    block_runs: int = option(10, f"runs per model per turn of the interleaving "
                                      f"(1 to {MAX_RUNS:,})")
    shapes: dict = option(help="fixed sizes of symbolic input dimensions, "
                               "e.g. {input_ids = [1, 128]}", factory=dict, flag=False)
    io_binding: bool = option(True, "on CUDA, inputs/outputs stay on the GPU while timed")

    def __post_init__(self):
        check_finite_fields(self, "bench")
        provider_name(self.provider)  # unknown names fail here, with a suggestion
        self.session_options()        # checks threads and graph_optimization
        for name in ("warmup",):
            if getattr(self, name) < 0:
                raise ValueError(f"bench.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch", "min_runs", "block_runs", "max_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"bench.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "min_runs", "block_runs", "max_runs"):
            check_budget("bench", name, getattr(self, name), "runs")
        if self.min_time_s < 0:
            raise ValueError(f"bench.min_time_s must be >= 0, got {self.min_time_s}")
        check_number("bench", "min_time_s", self.min_time_s, 0.0, MAX_SECONDS)
        for name, dims in self.shapes.items():
            if not dims or not all(isinstance(d, int) and d >= 1 for d in dims):
                raise ValueError(f"bench.shapes[{name!r}]={dims!r} is not valid; expected a "
                                 "list of positive integers, e.g. [1, 128]")

    @classmethod
    def with_profile(cls, profile: str, **overrides) -> "BenchConfig":
        """A config from a named profile (:data:`PROFILES`); ``overrides`` win."""
        if profile not in PROFILES:
            hint = did_you_mean(profile, PROFILES)
            raise ValueError(f"unknown bench profile {profile!r}; expected one of "
                             f"{', '.join(PROFILES)}{hint}")
        return cls(**{**PROFILES[profile], **overrides})

    def session_options(self) -> SessionOptions:
        return SessionOptions(provider=self.provider, threads=self.threads,
                              inter_op_threads=self.inter_op_threads, sequential=self.sequential,
                              spin_wait=self.spin_wait, graph_optimization=self.graph_optimization,
                              no_cpu_fallback=self.no_cpu_fallback)

    def to_dict(self) -> dict:
        return asdict(self)


class ModelUnderTest:
    """One model being benchmarked: its session, timing feeds, runner, timer and memory.

    Creating one does everything before the timed runs, inside a memory window that belongs
    to this model alone: session creation, one first inference, warm-up.
    """

    def __init__(self, path: Path, config: BenchConfig, data: dict | None, source: str):
        self.path, self.config = path, config
        self.header = check_onnx_file(path)  # before the clock and the memory window
        full = provider_name(config.provider)
        self.gpu = GpuMemory.open() if full in GPU_PROVIDERS else None
        with PeakRSS() as self.host_memory:
            if self.gpu is not None:
                self.gpu.start()
            t0 = time.perf_counter()
            self.session = make_session(path, config.session_options(), check_file=False)
            self.session_create_ms = (time.perf_counter() - t0) * 1e3
            self.eval_feeds = check_feeds(self.session, data, source) if data else None
            self.feeds = self._timing_feeds()
            self.run = self._make_runner()
            self.first_inference_ms = self._first_inference()
            warm_up(self.run, config.warmup)
        self.rss_after_warmup = rss_mb()
        if self.gpu is not None:
            self.gpu.sample()
        self.timer = RunTimer(self.run, config.min_runs, config.min_time_s, config.max_runs)

    def _timing_feeds(self) -> dict:
        model_bytes = model_size_bytes(self.path)
        if self.eval_feeds is not None:
            check_fits(f"benchmarking {self.path.name}", model_bytes,
                       data_feed_bytes(self.eval_feeds, max(self.config.batch, EVAL_BATCH)))
            return timing_feeds(self.eval_feeds, self.config.batch)
        names = {i.name for i in self.session.get_inputs()}
        shapes = {k: v for k, v in self.config.shapes.items() if k in names}
        check_fits(f"benchmarking {self.path.name}", model_bytes,
                   generated_feed_bytes(self.session, self.config.batch, shapes))
        return generate_inputs(self.session, self.config.batch, shapes,
                               vocab_sizes=token_vocab_sizes(self.header),
                               model_name=self.path.name)

    def _first_inference(self) -> float:
        t0 = time.perf_counter()
        try:
            outputs = self.run()
        except Exception as exc:  # ONNX Runtime's own error types are not ValueErrors
            raise run_failure(self.path, self.feeds, exc, "run") from exc
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        if outputs is None:   # bound to the GPU: copied back once, outside the clock
            outputs = self._binding.copy_outputs_to_cpu()
        names = [o.name for o in self.session.get_outputs()]
        self.nonfinite_outputs = [name for name, value in zip(names, outputs)
                                  if nonfinite_rows(np.asarray(value)[None]) > 0]
        return elapsed_ms

    def _make_runner(self):
        """A no-argument call doing one inference; on CUDA with IO binding, no host copies."""
        session, feeds = self.session, self.feeds
        self.io_binding = (session.get_providers()[0] == "CUDAExecutionProvider"
                           and self.config.io_binding)
        if self.io_binding:
            return self._bound_runner()
        run = session.run
        return lambda: run(None, feeds)

    def _bound_runner(self):
        """Inputs copied to the GPU once and outputs left there, so timing excludes copies."""
        import onnxruntime as ort

        session, binding = self.session, self.session.io_binding()
        self._binding = binding
        for name, value in self.feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        for out in session.get_outputs():
            binding.bind_output(out.name, "cuda", 0)

        def run():
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()  # the GPU has finished before the clock stops
        return run

    def memory_mb(self) -> dict:
        memory = {"rss_before": self.host_memory.before_mb, "rss_after": self.rss_after_warmup,
                  "session": max(0.0, self.rss_after_warmup - self.host_memory.before_mb),
                  "peak": max(self.host_memory.delta_mb,
                              self.rss_after_warmup - self.host_memory.before_mb),
                  "method": self.host_memory.method}
        if provider_name(self.config.provider) in GPU_PROVIDERS:
            if self.gpu is None:
                memory["gpu_peak"] = None
                memory["gpu_method"] = "unavailable: the NVIDIA driver library (NVML) was not found"
            else:
                memory["gpu_peak"] = self.gpu.sample()
                memory["gpu_method"] = self.gpu.method
        return memory


def _result(model: ModelUnderTest, config: BenchConfig, data: dict | None) -> dict:
    stats = model.timer.stats()
    providers = model.session.get_providers()
    result = {
        "model": str(model.path),
        "provider": providers[0],
        "providers": providers,
        "threads": config.threads,
        "inter_op_threads": config.inter_op_threads,
        "batch": config.batch,
        "input_shapes": {k: list(v.shape) for k, v in model.feeds.items()},
        "latency_ms": stats.to_dict(),
        "noisy": stats.noisy,
        "session_create_ms": model.session_create_ms,
        "first_inference_ms": model.first_inference_ms,
        "size_bytes": model_size_bytes(model.path),
        "params": parameter_count(model.header),
        "memory_mb": model.memory_mb(),
        "nodes_per_provider": check_provider_ran(
            nodes_per_provider(model.session, model.path, config.session_options(),
                               model.feeds), providers[0], model.path),
        "io_binding": model.io_binding,
        "settings": {k: v for k, v in config.to_dict().items() if k != "shapes"},
    }
    if config.batch > 1:
        result["throughput_per_s"] = config.batch * 1e3 / stats.mean
    result.update(output_quality(model, data or {}))
    if stats.noisy:
        result["warning"] = (f"latency spread (IQR/median) {stats.spread:.0%} is above "
                             f"{NOISY_SPREAD:.0%}: the machine is noisy; close other work "
                             "or raise --min-time")
    if model.nonfinite_outputs:   # a timing of a model that computes no numbers is no result
        names = sorted({*model.nonfinite_outputs, *result.get("nonfinite_outputs", [])})
        result.update(failed=True, nonfinite_outputs=names,
                      warning=f"output {', '.join(map(repr, names))} holds NaN or Inf on the "
                              f"timing inputs")
    return result


def check_provider_ran(counts: dict[str, int], provider: str, path: Path) -> dict[str, int]:
    """A provider that took no node did not run the model: reporting it would be false."""
    if provider != "CPUExecutionProvider" and counts and not counts.get(provider):
        raise ProviderError(f"{provider} was asked for but took none of the "
                            f"{sum(counts.values())} nodes of {path} (all ran on "
                            f"{', '.join(sorted(counts))}); timing it would time the CPU: "
                            "use --provider cpu, or a provider that runs this model")
    return counts


@lru_cache(maxsize=1)
def start_onnxruntime() -> None:
    """Create ONNX Runtime's process-wide environment with a one-node model, once.

    The first session in a process also pays for that environment (threads, allocators);
    paying it here keeps the first model's session time and memory comparable with the rest.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "start",
                              [value], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    lower_to_runtime(model)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), sess_options=so,
                                   providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.zeros(1, np.float32)})


def _paths(models) -> list[Path]:
    items = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    if not items:
        raise ValueError("no model to benchmark; give at least one .onnx file")
    return [Path(m) for m in items]


def graph_inputs(path: Path) -> list[str]:
    """The names of a model's inputs (graph inputs that are not initializers)."""
    graph = load_onnx_header(path).graph
    weights = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in weights]


def check_shapes_used(paths: list[Path], shapes: dict) -> None:
    """Each ``--shape NAME=...`` applies to the models that have input NAME; a name no model
    has is a typo, named with the inputs there are."""
    inputs = {path: graph_inputs(path) for path in paths}
    known = sorted({name for names in inputs.values() for name in names})
    for name in shapes:
        if name not in known:
            raise ValueError(f"--shape {name}=...: no input {name!r} in any model"
                             f"{did_you_mean(name, known)}; "
                             f"their inputs are {', '.join(known)}")


def time_interleaved(models: list[ModelUnderTest], block_runs: int) -> None:
    """Time the models in turns (A B, B A, ...) until every one has met its minimums.

    A model that is done keeps running while others are not, so every model is timed under
    the same conditions; the order flips each turn so neither goes first every time.
    """
    order = list(models)
    while not all(m.timer.done() for m in models):
        for model in order:
            if len(model.timer.samples_ns) < model.timer.max_runs:
                model.timer.time_block(block_runs)
        order.reverse()


def bench(models, config: BenchConfig | None = None, data=None) -> list[dict]:
    """Benchmark each model, timed interleaved; one result dict per model, in order.

    ``data`` is None (inputs generated from the declared types), a dict of arrays, or an
    ``.npz`` path: one array per model input, plus ``labels`` (top-1 accuracy) or
    ``reference`` (expected first outputs: errors and cosine similarity).
    """
    config = config or BenchConfig()
    require_provider(config.provider)  # before any model is read: fail fast, by name
    paths = _paths(models)
    source = "evaluation data"
    if isinstance(data, (str, os.PathLike)):
        source = f"data file {data}"
        data = load_npz(data)
    if data is not None and config.shapes:
        raise ValueError("--shape fixes generated inputs; with --data the data's own shapes "
                         "are used, so give one or the other")
    check_shapes_used(paths, config.shapes)
    start_onnxruntime()
    under_test = [ModelUnderTest(p, config, data, source) for p in paths]
    time_interleaved(under_test, config.block_runs)
    return [_result(m, config, data) for m in under_test]
