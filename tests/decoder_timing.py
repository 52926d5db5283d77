"""A stand-in for the decoder search's interleaved timing, so no test's verdict depends on
which candidate a timing probe favours on a loaded machine.

Decode tokens/s are set by a model's MatMulNBits accuracy level (``rates[level]``; the fp32
input and int8 models have no MatMulNBits: level -1).
"""

from __future__ import annotations

import types

import onnx

NEUTRAL_RATES = {-1: 10.0, 0: 20.0, 4: 30.0}   # every quantized candidate is faster


def accuracy_level(path) -> int:
    """The accuracy level of a model's MatMulNBits (-1 for a model without)."""
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type == "MatMulNBits":
            return next((a.i for a in node.attribute if a.name == "accuracy_level"), 0)
    return -1


def fake_timing(rates=None):
    """A replacement for ``decoder_quantize._generation_stats`` giving ``rates``."""
    rates = NEUTRAL_RATES if rates is None else rates

    def measure(decoders, prompt, new_tokens, rounds):
        return [types.SimpleNamespace(decode_tokens_per_s=rates[accuracy_level(d.path)],
                                      prefill_ms={"p50": 1.0}) for d in decoders]
    return measure


def fake_search_timing(monkeypatch, rates=None) -> None:
    """Fake the decoder search's probes and timing for the rest of a test."""
    from edgepack.compress.quantize import decoder_quantize

    monkeypatch.setattr(decoder_quantize, "_generation_stats", fake_timing(rates))
