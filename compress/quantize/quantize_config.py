"""The quantize stage's config: which method, that method's own settings, and the checks
every result passes.

``method`` names a registered method (:mod:`edgepack.compress.quantize.methods`: ``dynamic``,
``static``, ``fp16``, ``int4``); ``settings`` is that method's own small dataclass (None: its
defaults). Everything else here is shared by every method: the output check on held-out
inputs and the speed check against the input model.

A config is a plain value: nothing in it reads the machine. Presets and anything else that
depends on the CPU are resolved when the model is quantized, and the record keeps both the
request and the resolution. Recipes and command lines write it flat (``mode = "static"``
beside ``calibration = "entropy"`` and ``min_cosine = 0.99``); :meth:`QuantizeConfig.from_dict`
and :meth:`QuantizeConfig.to_dict` sort the keys into the two and back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgepack.bench.lm_quality import MAX_PERPLEXITY_RATIO, MIN_TOP1_AGREEMENT
from edgepack.core.checks import (MAX_RUNS, MAX_SECONDS, check_budget, check_choice,
                                  check_finite_fields, check_number)
from edgepack.core.errors import CheckFailed
from edgepack.core.registry import field_names, settings_dict, split_settings
from edgepack.core.stage import StageConfig, option

MIN_OPSET = 13  # per-channel QDQ and most quantized kernels need opset >= 13
RANKING_ROWS = 64  # rows used to rank nodes by activation error (every activation is held)

# Compute ops, as they appear after ONNX Runtime's graph optimisation: float or quantized.
FLOAT_COMPUTE_OPS = ("Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm",
                     "FusedGemm", "Attention", "MultiHeadAttention", "LSTM", "GRU")
INT_COMPUTE_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger",
                   "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention",
                   "DynamicQuantizeLSTM", "MatMulNBits", "NhwcQLinearConv")
METHOD_KEYS = ("mode", "method")   # recipes and flags say mode; both are accepted


class QuantizationCheckError(CheckFailed):
    """The quantized model failed its own check (NaN/Inf outputs, output check, speed
    check): exit code 1, with the figures."""

    exit_code = 1


def _methods():
    from edgepack.compress.quantize.methods import METHODS

    return METHODS


@dataclass
class QuantizeConfig(StageConfig):
    """A method, its settings, and the output and speed checks every result passes.

    The output check compares the result with its input on held-out inputs (``min_cosine``,
    ``min_top1_agreement``, ``min_centred_cosine``, ``max_norm_change``; ``tolerance`` for
    the top-1 accuracy drop with labelled data). The speed check times both interleaved on
    ``provider`` with ``speed_threads``; not faster fails unless ``allow_slower``.
    """

    kind = "quantize"
    version = 2  # 2: a method and its own settings (a run folder made before is redone)
    method: str = option("static", "how to quantize (a registered method)", flag=False)
    settings: Any = option(None, "the method's own settings (None: its defaults)", flag=False)
    calibration_samples: int = option(512, "calibration samples to use")
    evaluation_samples: int = option(2000, "evaluation rows used by the output check")
    tolerance: float | None = option(None, "largest accepted top-1 accuracy drop (absolute) "
                                           "with labelled data; overrides the recipe's")
    # Output check (every method): held-out inputs against the fp32 model.
    min_cosine: float = option(0.99, "output check: smallest mean cosine similarity to the "
                                      "fp32 outputs on held-out inputs, per output")
    min_top1_agreement: float = option(0.9, "output check (classifier-like outputs): "
                                            "smallest share of held-out rows whose top-1 "
                                            "class is fp32's; on a decoder, the language-model "
                                            "gate's share of token positions whose next token "
                                            f"is fp32's instead ({MIN_TOP1_AGREEMENT} unless "
                                            "given)")
    min_centred_cosine: float | None = option(None, "output check: also gate the cosine of "
                                                    "batch-centred outputs")
    max_norm_change: float = option(0.2, "output check: largest change of the outputs' size "
                                          "(row norm) against fp32, either way (0.2: 20%)")
    held_out_fraction: float = option(0.25, "share of the calibration rows kept out of "
                                            "calibration for the output check")
    check_rows: int = option(16, "generated rows for the output check without data")
    max_perplexity_ratio: float | None = option(None, "decoders only: largest perplexity on "
                                                      "held-out text over the input's (default "
                                                      f"{MAX_PERPLEXITY_RATIO})")
    search: bool = option(True, "when the first candidate fails the output check, try the "
                                "method's next ones (per-channel, 7-bit weights, sensitive "
                                "nodes in float, static with data) and keep the fastest that "
                                "passes; --no-search: one attempt only")
    # Speed check: interleaved timing of the result against its input.
    speed_check: bool = option(True, "time the result against its input (interleaved); "
                                     "not faster exits 1")
    allow_slower: bool = option(False, "keep a model the speed check finds no faster")
    provider: str = option("cpu", "execution provider for the speed check and preset auto")
    speed_threads: int = option(1, "speed check and profiling: intra-op threads")
    speed_min_runs: int = option(20, f"speed check: timed runs per model, at least (1 to "
                                     f"{MAX_RUNS:,})")
    speed_min_time_s: float = option(1.0, f"speed check: timed seconds per model, at least "
                                          f"(0 to {MAX_SECONDS:,.0f})")

    def __post_init__(self):
        check_finite_fields(self, "quantize")
        spec = _methods().get(self.method, "quantize")   # an unknown method names the others
        if self.settings is None and spec.settings is not None:
            self.settings = spec.settings()
        if spec.settings is not None and not isinstance(self.settings, spec.settings):
            raise ValueError(f"quantize: method {self.method!r} takes "
                             f"{spec.settings.__name__} settings, got "
                             f"{type(self.settings).__name__}")
        for name in ("calibration_samples", "evaluation_samples", "check_rows",
                     "speed_min_runs", "speed_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"quantize.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_cosine", "min_top1_agreement", "min_centred_cosine"):
            value = getattr(self, name)
            if value is not None and not -1.0 <= value <= 1.0:
                raise ValueError(f"quantize.{name} must be between -1 and 1, got {value}")
        if self.max_norm_change < 0:
            raise ValueError(f"quantize.max_norm_change must be >= 0, got "
                             f"{self.max_norm_change}")
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ValueError(f"quantize.held_out_fraction must be between 0 and 1 "
                             f"(exclusive), got {self.held_out_fraction}")
        if self.speed_min_time_s < 0:
            raise ValueError(f"quantize.speed_min_time_s must be >= 0, got "
                             f"{self.speed_min_time_s}")
        check_budget("quantize", "speed_min_runs", self.speed_min_runs, "runs")
        check_number("quantize", "speed_min_time_s", self.speed_min_time_s, 0.0, MAX_SECONDS)
        if self.max_perplexity_ratio is not None and not self.max_perplexity_ratio >= 1.0:
            raise ValueError(f"quantize.max_perplexity_ratio must be >= 1.0, got "
                             f"{self.max_perplexity_ratio}")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"quantize.tolerance must be >= 0, got {self.tolerance}")

    @property
    def mode(self) -> str:
        """The method's name, as recipes and the command line say it."""
        return self.method

    @property
    def spec(self):
        """The registered method."""
        return _methods().get(self.method)

    def to_dict(self) -> dict:
        """Flat, as a recipe writes it: kind, mode, the method's settings, the checks."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("method", "settings")}
        return {"kind": self.kind, "mode": self.method, **settings_dict(self.settings),
                **shared}

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> "QuantizeConfig":
        """Flat keys (a recipe table, flags) -> the config, each key checked by name."""
        from edgepack.core.checks import checked_fields

        owner = where or "quantize"
        data = {k: v for k, v in data.items() if k != "kind"}
        given = [k for k in METHOD_KEYS if k in data]
        if len(given) > 1:
            raise ValueError(f"{owner}: give mode or method, not both")
        method = data.pop(given[0]) if given else cls.method
        if not isinstance(method, str):
            raise ValueError(f"{owner}.mode must be a string, got {method!r}")
        check_choice("quantize", "mode", method, _methods().names())
        own = [n for n in field_names(cls) if n not in ("method", "settings")]
        shared, settings = split_settings(data, own, method, _methods(), owner)
        return cls(method=method, settings=settings, **checked_fields(cls, shared, owner))

    def with_method(self, method: str, settings=None) -> "QuantizeConfig":
        """The same checks with another method (its settings, or its defaults)."""
        return dataclasses.replace(self, method=method, settings=settings)


def quantize_config(mode: str = "static", **flat) -> QuantizeConfig:
    """A config from flat keyword arguments, as a recipe writes them:
    ``quantize_config("static", calibration="entropy", allow_slower=True)``."""
    return QuantizeConfig.from_dict({"mode": mode, **flat})


def default_settings(method: str):
    """The method's settings with nothing set (what ``settings=None`` becomes)."""
    spec = _methods().get(method)
    return spec.settings() if spec.settings is not None else None


__all__ = ["FLOAT_COMPUTE_OPS", "INT_COMPUTE_OPS", "MIN_OPSET", "QuantizationCheckError",
           "QuantizeConfig", "RANKING_ROWS", "default_settings", "quantize_config"]
