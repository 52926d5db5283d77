"""Every stage on the networks users bring: prune -> export -> quantize -> package -> bench.

For each architecture of :mod:`edgepack.zoo.architectures` (random weights), :func:`run_one`
prunes a copy (structured, ``ratio``, heads where there are heads), exports the original
and the pruned model with a parity check, quantizes the pruned one with the default
settings, packages the int8 model (``.ort`` + manifest, parity-checked again), and times the
three ONNX models interleaved in one run. A stage that refuses is recorded with its exit
code (1 a failed check, 2 bad input, 3 a bug) and its one-line reason; the next stages that
need its output are skipped. Quantization's speed check may refuse int8 that is no faster
on this machine (exit 1): that refusal is recorded and the int8 model is kept anyway
(``allow_slower``), so packaging and timing still run. ``benchmarks/sweep_architectures.py`` runs it at real sizes and
prints the table; the test suite runs it on tiny widths.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgepack.core.checks import check_finite_fields, check_range
from edgepack.core.errors import exit_code_for


@dataclass
class Architecture:
    """One network to sweep: its builder, its arguments, and the input it takes."""

    name: str
    builder: str                      # function name in edgepack.zoo.architectures
    kwargs: dict = field(default_factory=dict)
    image_size: int = 224             # images: (batch, 3, size, size)
    sequence: int = 0                 # > 0: token ids and attention mask of this length
    vocab: int = 0

    @property
    def kind(self) -> str:
        return "tokens" if self.sequence else "image"

    def build(self) -> torch.nn.Module:
        from edgepack.zoo import architectures

        torch.manual_seed(0)
        return getattr(architectures, self.builder)(**self.kwargs).eval()

    def inputs(self, rows: int, seed: int) -> tuple[torch.Tensor, ...]:
        """``rows`` random inputs: images ~N(0, 1), or token ids with a full mask."""
        generator = torch.Generator().manual_seed(seed)
        if self.sequence:
            ids = torch.randint(1, self.vocab, (rows, self.sequence), generator=generator)
            return ids, torch.ones_like(ids)
        return (torch.randn(rows, 3, self.image_size, self.image_size, generator=generator),)

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("input_ids", "attention_mask") if self.sequence else ("input",)


def real_architectures() -> list[Architecture]:
    """The reference sizes: 224x224 images, BERT with 4 layers at sequence length 128."""
    return [Architecture("ResNet-18", "resnet18"),
            Architecture("MobileNetV3-small", "mobilenet_v3_small"),
            Architecture("EfficientNet-B0", "efficientnet_b0"),
            Architecture("ConvNeXt-atto", "convnext_atto"),
            Architecture("ViT-tiny", "vit_tiny"),
            Architecture("BERT (4 layers, 256 wide)", "bert_classifier", sequence=128,
                         vocab=30522)]


@dataclass
class SweepSettings:
    """Pruning ratio and how the three models are timed (1 thread, batch 1 by default)."""

    ratio: float = 0.5
    exporter: str = "dynamo"          # the suite uses torchscript: the same checks, faster
    export_dense: bool = True         # the unpruned model, timed as the baseline
    threads: int = 1
    warmup: int = 5
    min_runs: int = 20
    min_time_s: float = 1.0
    parity_rows: int = 8
    calibration_rows: int = 32
    agreement_rows: int = 32

    def __post_init__(self):
        check_finite_fields(self, "sweep")
        check_range("sweep", "ratio", self.ratio, 0.0, 1.0)


def _refusal(stage: str, exc: Exception) -> dict:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return {"stage": stage, "exit_code": exit_code_for(exc), "reason": text[:300]}


def _export(model, arch: Architecture, path: Path, settings: SweepSettings) -> dict:
    from edgepack.export.torch_export import ExportConfig, export_onnx

    config = ExportConfig(exporter=settings.exporter, input_names=arch.input_names,
                          dynamic_axes=(1,) if arch.sequence else ())
    result = export_onnx(model, config, arch.inputs(1, seed=1), path,
                         parity_inputs=arch.inputs(settings.parity_rows, seed=2))
    return {"max_abs": result.record["parity"]["max_abs"], "ok": result.record["parity"]["ok"]}


def _feeds(arch: Architecture, rows: int, seed: int) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in zip(arch.input_names,
                                                         arch.inputs(rows, seed))}


def _quantize(pruned_onnx: Path, arch: Architecture, path: Path, settings: SweepSettings,
              row: dict) -> None:
    """Default settings. When its speed check refuses (int8 no faster on this machine), the
    refusal is recorded and the model is quantized again with ``allow_slower``, so the
    later stages and the table still show what int8 gives."""
    from edgepack.compress.quantize import quantize_config, quantize
    from edgepack.compress.quantize.speed_check import SpeedCheckFailed

    calibration = _feeds(arch, settings.calibration_rows, seed=3)
    try:
        quantize(pruned_onnx, quantize_config(), path, calibration)
    except SpeedCheckFailed as exc:
        row["refused"].append(_refusal("quantize", exc))
        quantize(pruned_onnx, quantize_config(allow_slower=True), path, calibration)


def agreement(reference: Path, candidate: Path, feeds: dict[str, np.ndarray]) -> dict:
    """Mean cosine similarity and top-1 agreement of two models' first outputs, row by row."""
    import onnxruntime as ort

    def first_output(path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run(None, feeds)[0].reshape(len(next(iter(feeds.values()))), -1)

    ref, cand = first_output(reference), first_output(candidate)
    cosine = (ref * cand).sum(1) / np.maximum(np.linalg.norm(ref, axis=1)
                                              * np.linalg.norm(cand, axis=1), 1e-12)
    return {"cosine": float(cosine.mean()),
            "top1_agreement": float((ref.argmax(1) == cand.argmax(1)).mean())}


def _bench(paths: dict[str, Path], arch: Architecture, settings: SweepSettings) -> dict:
    from edgepack.bench.runner import BenchConfig, bench

    shapes = {n: [1, arch.sequence] for n in arch.input_names} if arch.sequence else {}
    config = BenchConfig(threads=settings.threads, batch=1, warmup=settings.warmup,
                         min_runs=settings.min_runs, min_time_s=settings.min_time_s,
                         shapes=shapes)
    results = bench(list(paths.values()), config)
    return {name: {"p50_ms": r["latency_ms"]["p50"], "mean_ms": r["latency_ms"]["mean"],
                   "runs": r["latency_ms"]["runs"], "noisy": r["noisy"]}
            for name, r in zip(paths, results)}


def run_one(arch: Architecture, work: Path, settings: SweepSettings) -> dict:
    """Every stage on ``arch``; the row of the table (see the module docstring)."""
    from edgepack.compress.prune import PruneConfig, prune
    from edgepack.export.package import package_model

    work.mkdir(parents=True, exist_ok=True)
    row: dict = {"name": arch.name, "refused": [], "seconds": {}}
    dense = arch.build()
    pruned = copy.deepcopy(dense)
    paths = {"fp32": work / "dense.onnx", "pruned": work / "pruned.onnx",
             "int8": work / "pruned.int8.onnx"}
    stages = [
        ("prune", lambda: row.update(prune=prune(
            pruned, PruneConfig(method="structured", ratio=settings.ratio),
            arch.inputs(1, seed=1), progress=False).record)),
        ("export fp32", lambda: row.update(parity_fp32=_export(dense, arch, paths["fp32"],
                                                               settings))),
        ("export pruned", lambda: row.update(parity_pruned=_export(
            pruned, arch, paths["pruned"], settings))),
        ("quantize", lambda: _quantize(paths["pruned"], arch, paths["int8"], settings, row)),
        ("package", lambda: row.update(package=sorted(package_model(
            paths["int8"], work / "package").get("files", {})))),
    ]
    if not settings.export_dense:
        stages = [stage for stage in stages if stage[0] != "export fp32"]
    needs = {"export pruned": "prune", "quantize": "export pruned", "package": "quantize"}
    missing: set[str] = set()
    for stage, run in stages:
        if needs.get(stage) in missing:
            missing.add(stage)
            row["refused"].append({"stage": stage, "exit_code": None,
                                   "reason": f"skipped: needs {needs[stage]}"})
            continue
        start = time.perf_counter()
        try:
            run()
        except Exception as exc:  # every stage's refusal is recorded, the sweep goes on
            missing.add(stage)
            row["refused"].append(_refusal(stage, exc))
        row["seconds"][stage] = round(time.perf_counter() - start, 2)
    timed = {name: path for name, path in paths.items() if path.is_file()}
    if timed:
        try:
            row["latency"] = _bench(timed, arch, settings)
        except Exception as exc:
            row["refused"].append(_refusal("bench", exc))
    if paths["int8"].is_file() and paths["pruned"].is_file():
        row["int8_agreement"] = agreement(paths["pruned"], paths["int8"],
                                          _feeds(arch, settings.agreement_rows, seed=4))
    return row
