"""What the pipeline measures: every artifact on ONNX Runtime, timed beside its input.

torch artifacts are timed through a scratch ONNX export (``export_for_bench``), so every row of
the report is measured on the same runtime, with the same data, threads and batch.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import onnx
import torch
from torch import nn

from edgepack.bench.robustness import RobustnessConfig
from edgepack.bench.runner import BenchConfig, bench
from edgepack.bench.session import ProviderError, provider_name
from edgepack.compress.kd import collect
from edgepack.compress.prune import count_params
from edgepack.core.tensors import as_tuple, rows, to_numpy
from edgepack.pipeline.distributed import Crew
from edgepack.export.torch_export import ExportConfig, export_onnx
from edgepack.export.weights import save_weights

METRIC_KEYS = ("params", "size_bytes", "accuracy", "latency_ms", "provider", "providers",
               "nodes_per_provider", "threads", "batch", "memory_mb", "by_provider",
               "robustness", "attribution", "privacy", "mean_cosine", "worst_cosine",
               "spearman", "perplexity", "perplexity_ratio", "top1_agreement",
               "greedy_agreement", "decode_tokens_per_s", "prefill_ms")


@dataclass
class Artifact:
    """What flows between stages: a torch module or an ONNX file, with its measurements."""

    name: str
    module: nn.Module | None = None
    onnx_path: Path | None = None        # the ONNX file (for torch artifacts: a bench export)
    file: Path | None = None             # the artifact file in the run folder
    metrics: dict = field(default_factory=dict)
    source_module: nn.Module | None = None   # the torch model it is (or came from): gradients

    def __post_init__(self):
        if self.source_module is None:
            self.source_module = self.module


@dataclass
class PipelineContext:
    """Everything the stages share: data, output folder, settings, scratch space."""

    out_dir: Path
    data: dict
    tolerance: float
    bench: BenchConfig
    teacher: nn.Module
    scratch: Path
    metric: Any = None                   # the [metric] settings (None: accuracy; metric_kinds)
    example_inputs: torch.Tensor | None = None   # batch-shaped data: set by the metric kind
    eval_arrays: dict | None = None
    state: Any = None                    # what the metric kind computed once (its reference)
    providers: tuple = ("cpu",)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    probe: Any = None   # edgepack.pipeline.robustness_probe.RobustnessProbe, made beside the teacher's row
    privacy: Any = None   # edgepack.pipeline.privacy_probe.PrivacySetup (None: no privacy section)
    privacy_probe: Any = None   # its PrivacyProbe, made beside the teacher's row
    bench_export: ExportConfig = field(default_factory=ExportConfig)   # for scratch exports
    resume: bool = False
    progress: bool = True
    base_dir: Path | None = None
    build: Callable | None = None
    log: Callable[[str], None] = print
    crew: Crew = field(default_factory=Crew)   # the ranks of a torchrun job (alone: one)


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_providers(providers) -> None:
    """Every requested provider must exist here, before anything runs."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    for name in providers:
        full = provider_name(name)
        if full not in available:
            raise ProviderError(f"[bench] providers: {full} is not available here (available: "
                                f"{', '.join(available)}); install onnxruntime-gpu for CUDA, "
                                "or remove it from the recipe")


def eval_arrays(data: dict) -> dict:
    """The evaluation set, stacked once: numpy for ONNX Runtime, torch for parity checks.

    Inputs are one tensor, or a tuple of tensors for several-input models (token ids, mask).
    """
    inputs, labels = collect(data["evaluation"])
    if inputs is None or len(as_tuple(inputs)[0]) == 0:
        raise ValueError("the data provider's evaluation set is empty (0 samples)")
    return {"inputs": to_numpy(inputs), "labels": labels.numpy(), "inputs_torch": inputs}


def use_batches(ctx: PipelineContext) -> None:
    """For kinds measured on batches of (inputs, labels): the evaluation set stacked once,
    and the example input torch stages trace with."""
    ctx.eval_arrays = eval_arrays(ctx.data)
    ctx.example_inputs = rows(ctx.eval_arrays["inputs_torch"], 0, 1)


def with_input(figures: dict, input_result: dict | None, source: Artifact) -> dict:
    """A candidate's figures with its input's accuracy and p50 latency (timed with it), and
    the speed-up over it."""
    latency = input_result["latency_ms"] if input_result else None
    figures["input"] = {"name": source.name, "accuracy": source.metrics.get("accuracy"),
                        "latency_ms": latency}
    figures["speedup"] = latency["p50"] / figures["latency_ms"]["p50"] if latency else None
    return figures


def _onnx_input_names(path: Path) -> list[str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def _eval_data_for(path: Path, arrays: dict, labels: bool = True) -> dict:
    """Feeds by input name (in the graph's input order), plus labels for accuracy."""
    feeds = dict(zip(_onnx_input_names(path), as_tuple(arrays["inputs"])))
    return {**feeds, "labels": arrays["labels"]} if labels else feeds


def measure_pair(ctx: PipelineContext, reference: Path | None, candidate: Path,
                 labels: bool = True) -> tuple[dict, dict | None]:
    """Benchmark the candidate (and its reference, interleaved) on every provider; with
    ``labels``, its accuracy on the evaluation set too."""
    by_provider: dict[str, dict] = {}
    ref_result = None
    for provider in ctx.providers:
        config = dataclasses.replace(ctx.bench, provider=provider)
        paths = [candidate] + ([reference] if reference is not None else [])
        results = bench(paths, config, _eval_data_for(candidate, ctx.eval_arrays,
                                                      labels=labels))
        by_provider[results[0]["provider"]] = results[0]
        if ref_result is None and len(results) > 1:
            ref_result = results[1]
    first = dict(next(iter(by_provider.values())))  # the first provider is the one judged
    if len(by_provider) > 1:
        first["by_provider"] = {k: {"latency_ms": v["latency_ms"], "accuracy": v.get("accuracy")}
                                for k, v in by_provider.items()}
    return first, ref_result


def metrics_from(result: dict, size_bytes: int, params: int) -> dict:
    """The report's metrics for one artifact, from its bench result."""
    metrics = {"params": params, "size_bytes": size_bytes}
    metrics.update({k: result.get(k) for k in ("accuracy", "latency_ms", "provider", "providers",
                                               "nodes_per_provider", "threads", "batch",
                                               "memory_mb")})
    if "by_provider" in result:
        metrics["by_provider"] = result["by_provider"]
    return metrics


def export_for_bench(ctx: PipelineContext, module: nn.Module, name: str) -> Path:
    """A scratch ONNX export of a torch artifact, so it is timed on the same runtime."""
    path = ctx.scratch / f"{name}.onnx"
    export_onnx(module, ctx.bench_export, ctx.example_inputs, path,
                parity_inputs=rows(ctx.eval_arrays["inputs_torch"], 0, 8))
    return path


def measure_robustness(ctx: PipelineContext, onnx_path: Path, module: nn.Module | None,
                       source: nn.Module | None) -> dict:
    """``robustness`` (attacks) and ``attribution`` (drift from the teacher) of one artifact.

    ``module``: the artifact's torch model when it is one; ``source``: the torch model
    white-box attacks are crafted on (``module``, or the model the ONNX file came from).
    """
    if ctx.probe is None:
        return {}
    return ctx.probe.measure(onnx_path, module=module, source=source)


def measure_candidate(ctx: PipelineContext, candidate: Artifact, source: Artifact, *,
                      labels: bool = True, quality: Callable[[Path], dict] | None = None,
                      probes: bool = True) -> tuple[dict, dict | None]:
    """The candidate's metrics (timed interleaved with its input) and its input's result:
    its accuracy with ``labels``, the metric kind's ``quality`` figures, and with ``probes``
    the robustness and privacy probes the run set up."""
    module, path, onnx_path = candidate.module, candidate.file, candidate.onnx_path
    result, ref = measure_pair(ctx, source.onnx_path, onnx_path, labels)
    if module is not None:
        metrics = metrics_from(result, path.stat().st_size, count_params(module))
    else:
        metrics = metrics_from(result, result["size_bytes"], result["params"])
    grad_source = module if module is not None else source.source_module
    metrics.update(quality(onnx_path) if quality is not None else {})
    if probes:
        metrics.update(measure_robustness(ctx, onnx_path, module, grad_source))
        if ctx.privacy_probe is not None:
            metrics.update(ctx.privacy_probe.measure(onnx_path))
    return metrics, ref


def chance_check(accuracy: float | None, labels) -> dict:
    """The evaluation set's chance level, and whether ``accuracy`` is near it: every stage
    is judged against the teacher, which says nothing when the teacher learned nothing."""
    from edgepack.bench.chance import chance_accuracy, near_chance

    if accuracy is None or labels is None or not len(labels):
        return {}
    chance = chance_accuracy(labels)
    return {"chance_accuracy": round(chance, 6),
            "near_chance": near_chance(accuracy, chance, len(labels))}


def measure_teacher(ctx: PipelineContext, teacher: nn.Module, *, labels: bool = True,
                    quality: Callable[[Path], dict] | None = None,
                    probes: bool = True, summary: Callable[[dict], str] = str
                    ) -> tuple[dict, Artifact]:
    """The teacher's row of the report, and the artifact the first stage starts from
    (``labels``, ``quality``, ``probes``: as for :func:`measure_candidate`; robustness and
    privacy probes are set up here, on the teacher, when ``probes`` is on)."""
    folder = ctx.out_dir / "00-teacher"
    folder.mkdir(exist_ok=True)
    path = save_weights(teacher, folder / "model.safetensors")
    onnx_path = export_for_bench(ctx, teacher, "teacher")
    result, _ = measure_pair(ctx, None, onnx_path, labels)
    metrics = metrics_from(result, path.stat().st_size, count_params(teacher))
    metrics.update(quality(onnx_path) if quality is not None else {})
    if probes:  # attacks and attributions need a classifier on signals
        from edgepack.pipeline.robustness_probe import RobustnessProbe

        from edgepack.pipeline.teacher import cache_dir

        ctx.probe = RobustnessProbe(ctx.robustness, ctx.eval_arrays["inputs"],
                                    ctx.eval_arrays["labels"], teacher, onnx_path,
                                    cache_folder=cache_dir() / "robustness")
        metrics.update(ctx.probe.measure(onnx_path, module=teacher, source=teacher,
                                         attribution=False))   # the teacher is the reference
    if ctx.privacy is not None and ctx.privacy.config.enabled:
        from edgepack.pipeline.privacy_probe import PrivacyProbe, member_sets

        sets = member_sets(ctx.privacy.config, ctx.data, _onnx_input_names(onnx_path))
        ctx.privacy_probe = PrivacyProbe(ctx.privacy.config, sets, ctx.privacy.references)
        metrics.update(ctx.privacy_probe.measure(onnx_path))
    entry = {"name": "teacher", "artifact": str(path.relative_to(ctx.out_dir)), **metrics,
             **chance_check(metrics.get("accuracy"), ctx.eval_arrays["labels"])}
    ctx.log(f"[teacher] {summary(metrics)}, p50 "
            f"{metrics['latency_ms']['p50']:.4f} ms, {metrics['params']:,} params")
    return entry, Artifact("teacher", teacher, onnx_path, path, metrics)
