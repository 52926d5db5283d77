"""The speed check: is the quantized model faster than its input, here, as asked?

Both models are timed with bench's harness (``edgepack.bench.runner``): one session each on the
provider and thread count asked for, warm-up, then runs in interleaved blocks (A B, B A ...)
so a machine that drifts favours neither. The verdict is on the median latency. A model that
is not faster fails with exit code 1 unless ``allow_slower``; the figures go into the record
either way. ``speed_min_runs``/``speed_min_time_s`` keep the check cheap (tests set them low);
``speed_check=False`` skips it, and the record says it was skipped. A method may name a
rival the result must beat too (static int8 on a transformer: dynamic int8).
"""

from __future__ import annotations

from pathlib import Path

from edgepack.compress.quantize.quantize_config import QuantizationCheckError, QuantizeConfig


class SpeedCheckFailed(QuantizationCheckError):
    """The quantized model is not faster than its input on the provider asked for."""

    exit_code = 1

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


def bench_config(config: QuantizeConfig):
    from edgepack.bench.runner import BenchConfig

    return BenchConfig(provider=config.provider, threads=config.speed_threads, batch=1,
                       warmup=3, min_runs=config.speed_min_runs,
                       min_time_s=config.speed_min_time_s, block_runs=5)


def time_models(paths: list[Path], config: QuantizeConfig, feeds: dict) -> list[dict]:
    """Median/p90 latency (ms) and runs of each model, timed interleaved on ``feeds``."""
    from edgepack.bench.runner import ModelUnderTest, start_onnxruntime, time_interleaved

    bc = bench_config(config)
    start_onnxruntime()
    models = [ModelUnderTest(Path(p), bc, feeds, "speed-check inputs") for p in paths]
    time_interleaved(models, bc.block_runs)
    out = []
    for model in models:
        stats = model.timer.stats().to_dict()
        out.append({"p50_ms": round(stats["p50"], 4), "p90_ms": round(stats["p90"], 4),
                    "runs": int(stats.get("runs", len(model.timer.samples_ns)))})
    return out


def speed_figures(input_path: Path, quant_path: Path, config: QuantizeConfig, feeds: dict,
                  extra: dict[str, Path] | None = None) -> dict:
    """Time the quantized model against its input (and ``extra`` models, e.g. the dynamic
    alternative to a static model), all interleaved in one run."""
    extra = extra or {}
    paths = [input_path, quant_path, *extra.values()]
    timed = time_models(paths, config, feeds)
    base = timed[0]["p50_ms"]
    figures = {"provider": config.provider, "threads": config.speed_threads, "batch": 1,
               "input": timed[0], "quantized": timed[1],
               "speedup": round(base / max(timed[1]["p50_ms"], 1e-9), 4),
               "allow_slower": config.allow_slower}
    for (name, _), result in zip(extra.items(), timed[2:]):
        figures[name] = {**result, "speedup": round(base / max(result["p50_ms"], 1e-9), 4)}
    if extra:
        figures["rivals"] = list(extra)
    return figures


def check_speed(figures: dict, config: QuantizeConfig, cause: str) -> None:
    """Refuse a result that is not faster than its input (unless ``allow_slower``)."""
    if figures["speedup"] > 1.0 or config.allow_slower:
        return
    raise SpeedCheckFailed(
        f"the quantized model is not faster than its input: median "
        f"{figures['quantized']['p50_ms']:.3f} ms vs {figures['input']['p50_ms']:.3f} ms "
        f"({figures['speedup']:.2f}x) on {figures['provider']} with {figures['threads']} "
        f"thread(s), timed interleaved; {cause}; pass --allow-slower to keep it anyway",
        figures)


def check_beats_rival(figures: dict, config: QuantizeConfig, method: str,
                      rival: str | None) -> None:
    """The result must beat the method's rival (timed as ``figures[rival]``), or it is
    refused recommending the rival: static int8 on a transformer against dynamic int8."""
    from edgepack.compress.quantize.methods import METHODS

    other = figures.get(rival) if rival else None
    if other is None or config.allow_slower:
        return
    if other["p50_ms"] < figures["quantized"]["p50_ms"]:
        ours, theirs = METHODS.get(method).title, METHODS.get(rival).title
        raise SpeedCheckFailed(
            f"{ours} is slower than {theirs} on this graph and CPU: median "
            f"{figures['quantized']['p50_ms']:.3f} ms ({method}, "
            f"{figures['speedup']:.2f}x fp32) vs {other['p50_ms']:.3f} ms ({rival}, "
            f"{other['speedup']:.2f}x fp32), timed interleaved; use --mode {rival} (or "
            f"--allow-slower to keep {method} anyway)", figures)


def describe(figures: dict | None) -> str:
    if not figures:
        return "speed check skipped"
    text = (f"{figures['speedup']:.2f}x its input (median {figures['quantized']['p50_ms']:.3f}"
            f" vs {figures['input']['p50_ms']:.3f} ms, {figures['provider']}, "
            f"{figures['threads']} thread(s), interleaved)")
    for name in figures.get("rivals", ()):
        text += f"; {name} {figures[name]['speedup']:.2f}x"
    return text
