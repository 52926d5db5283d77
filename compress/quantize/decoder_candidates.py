"""The candidates the decoder quantize stage tries, and the gate each one must pass.

A candidate is a quantize method and its settings (:mod:`edgepack.compress.quantize.methods`): int4
weight-only with an algorithm, a block size, symmetric or not and an accuracy level, or int8
dynamic. Candidates that differ only in their accuracy level share one quantization (the
level is a node attribute): :func:`quantization_key` says which.

Why the default grid is what it is (SmolLM2-135M on a 2-core AVX2 CPU, docs/llm.md): RTN
takes seconds per model; a candidate far beyond the gate is refused after a
first look at a quarter of the windows, so a wide grid costs little. GPTQ runs the whole model once per distinct
MatMul input on every calibration window, minutes on two cores, so it is tried only when
calibration windows are given (:func:`gptq_candidates`, a recipe may add them); and ONNX
Runtime 1.32's GPTQ does not use its calibration (tests/compress/test_quantize_int4.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgepack.compress.quantize.methods import METHODS


@dataclass(frozen=True)
class DecoderCandidate:
    """One way to quantize a decoder: a registered method and its settings."""

    method: str
    settings: Any

    @property
    def label(self) -> str:
        spec = METHODS.get(self.method)
        return f"{spec.title}: {spec.describe(self.settings)}"

    @property
    def needs_calibration(self) -> bool:
        """It reads calibration windows (the method says so for these settings)."""
        return METHODS.get(self.method).reads_calibration(self.settings)


def quantization_key(candidate: DecoderCandidate) -> tuple:
    """Candidates with the same key are one quantization (they differ only in accuracy
    level, a node attribute set afterwards)."""
    settings = candidate.settings
    if hasattr(settings, "accuracy_level"):
        settings = dataclasses.replace(settings, accuracy_level=0)
    return candidate.method, repr(settings)


def int4(algorithm: str, block_size: int, symmetric: bool, accuracy_level: int,
         quantize_embedding: bool = True, bits: int = 4,
         embedding_bits: int = 0) -> DecoderCandidate:
    """A weight-only candidate of the int4 method (``bits=8``: its 8-bit blocks;
    ``embedding_bits``: the tied embedding / lm_head's own width, 0 as ``bits``), settings
    checked by the method's own dataclass."""
    settings = METHODS.get("int4").settings(
        algorithm=algorithm, block_size=block_size, symmetric=symmetric,
        accuracy_level=accuracy_level, quantize_embedding=quantize_embedding, bits=bits,
        embedding_bits=embedding_bits)
    return DecoderCandidate("int4", settings)


# The dynamic int8 settings a decoder candidate may be given; the others (the encoder path's
# node search and fusions) are the decoder stage's own, measured instead.
DYNAMIC_SETTINGS = ("preset", "per_channel", "reduce_range")


def int8_dynamic(provider: str = "cpu", **given) -> DecoderCandidate:
    """Dynamic int8 with per-channel weights and this CPU's preset resolved (AVX2 without
    VNNI: 7-bit weights, since VPMADDUBSW saturates at 16 bits; with 8-bit weights SmolLM2's
    large activations overflow it: perplexity ratio 4e4), or the :data:`DYNAMIC_SETTINGS`
    ``given``. The search and the fusions of the encoder path are off: the decoder stage
    measures instead."""
    spec = METHODS.get("dynamic")
    settings = spec.settings(**{"preset": "auto", "per_channel": True, **given},
                             accuracy_aware=False, latency_aware=False,
                             transformer_fusions="off")
    settings, _ = spec.resolve(settings, provider)
    return DecoderCandidate("dynamic", settings)


def default_decoder_candidates() -> list[DecoderCandidate]:
    """The default grid, cheapest first: int4 RTN at blocks 32/64/128, symmetric and not,
    each at accuracy levels 4 and 0 (one quantization each); MatMulNBits' 8-bit blocks (RTN,
    asymmetric) at 32 and 128 with accuracy level 4, for a model that 4-bit integer zero
    points cannot hold; then int8 dynamic. The tied embedding / lm_head is quantized in every
    weight-only candidate. Left out, measured on SmolLM2-135M on AVX2 (docs/llm.md): HQQ
    (float zero points take ONNX Runtime's slow path, 0.1x fp32) and 8-bit blocks at accuracy
    level 0 (0.13x); a recipe may pass them (:func:`hqq_candidates`, :func:`gptq_candidates`,
    ``int4("rtn", 32, False, 0, bits=8)``)."""
    grid = [int4("rtn", block, symmetric, level)
            for block in (32, 64, 128) for symmetric in (True, False) for level in (4, 0)]
    grid += [int4("rtn", block, False, 4, bits=8) for block in (32, 128)]
    grid += offset_candidates()
    return grid + [int8_dynamic()]


def requested_candidates(method: str, given: dict,
                         search: bool) -> tuple[list[DecoderCandidate], str]:
    """The candidates a command line asks for, and how they were chosen: never another
    method than ``method``.

    ``given``: the method's settings the user set (int4: block_size, symmetric, algorithm,
    ...; dynamic: :data:`DYNAMIC_SETTINGS`), by field name. ``dynamic``: one candidate. int4
    without the search: one candidate, exactly those settings and the method's defaults for
    the rest; with it, the default grid's int4 candidates that agree with every given
    setting (4-bit blocks unless ``bits`` is given: the user asked for int4), or, when none
    agrees, the one candidate the settings describe.
    """
    if method == "dynamic":
        return [int8_dynamic(**given)], "one candidate: dynamic int8 with the settings given"
    spec = METHODS.get("int4")
    exact = DecoderCandidate("int4", spec.settings(**given))   # checks the settings
    if not search:
        return [exact], "one candidate: the settings given (--no-search)"
    wanted = {"bits": 4, **given}
    grid = [c for c in default_decoder_candidates() if c.method == "int4"
            and all(getattr(c.settings, k) == v for k, v in wanted.items())]
    if not grid:
        return [exact], "one candidate: no candidate of the default grid has the settings given"
    held = ", ".join(f"{k} = {v}" for k, v in sorted(wanted.items()))
    return grid, (f"the default int4 grid's {len(grid)} candidate{'s' if len(grid) > 1 else ''} "
                  f"with {held}")


def offset_candidates(block_sizes=(32, 64)) -> list[DecoderCandidate]:
    """edgepack's float-offset int4 blocks (exact block minimums on the symmetric kernel),
    the tied embedding / lm_head in symmetric 8-bit blocks, at accuracy levels 4 and 0."""
    return [int4("offset", block, False, level, embedding_bits=8) for block in block_sizes
            for level in (4, 0)]


def hqq_candidates(block_sizes=(32,)) -> list[DecoderCandidate]:
    """HQQ candidates (float zero points: close to a GGUF Q4_1 grid, slow on CPUs today)."""
    return [int4("hqq", block, False, level) for block in block_sizes for level in (4, 0)]


def gptq_candidates(block_sizes=(32, 128)) -> list[DecoderCandidate]:
    """GPTQ candidates (symmetric: ONNX Runtime's asymmetric GPTQ needs an even number of
    blocks per column), for a recipe that passes calibration windows and has the minutes."""
    return [int4("gptq", block, True, level) for block in block_sizes for level in (4, 0)]


__all__ = ["DecoderCandidate", "default_decoder_candidates",
           "DYNAMIC_SETTINGS", "gptq_candidates", "hqq_candidates", "int4", "int8_dynamic",
           "quantization_key", "requested_candidates"]
