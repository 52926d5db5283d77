"""Parity of an exported decoder with its KV cache: a prefill, then decode steps on a growing
cache, torch against ONNX Runtime.

A decoder exported with ``text-generation-with-past`` is used one way on a device: one
prefill of the prompt, then one token at a time with the cache the previous step returned.
A graph can match torch on the prefill and still drift once the cache is fed back (a wrong
position id, a mask of the wrong length, a cache axis swapped), so the check walks that
loop: the prefill's logits, the logits of every decode step, and the cache after the last
step, each compared with ``|a - e| <= atol + rtol * |e|``. The tokens fed back are torch's
greedy choices, so both sides see the same context at every step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.decoder import Decoder
from export.parity import compare_outputs, parity_summary

PROMPT_LENGTH = 12
DECODE_STEPS = 4


def _layer_cache(cache, layer: int):
    """(key, value) of one layer from a transformers cache object or a legacy tuple."""
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache[layer][0], cache[layer][1]


def torch_greedy_steps(model, prompt, steps: int):
    """Torch's logits for the prefill and each greedy decode step, the tokens fed back (the
    greedy continuation, never stopped at end of text), and the cache after the last step."""
    import torch

    logits, fed = [], []
    prompt = torch.from_numpy(np.asarray(prompt, dtype=np.int64)).reshape(1, -1)
    with torch.no_grad():
        out = model(input_ids=prompt, use_cache=True)
        logits.append(out.logits[0].float().numpy())
        for _ in range(steps):
            token = int(out.logits[0, -1].argmax())
            fed.append(token)
            out = model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values,
                        use_cache=True)
            logits.append(out.logits[0].float().numpy())
    return logits, fed, out.past_key_values


def check_decoder_parity(model, onnx_path: Path, atol: float, rtol: float,
                         prompt_length: int = PROMPT_LENGTH, steps: int = DECODE_STEPS,
                         seed: int = 0) -> dict:
    """Compare ``model`` (a transformers causal LM in torch) with the ONNX decoder at
    ``onnx_path`` on a prefill of ``prompt_length`` random tokens and ``steps`` decode steps;
    the summary's ``lines`` say, per step, the largest errors."""
    decoder = Decoder(onnx_path)
    vocab = int(model.config.vocab_size)
    prompt = np.random.default_rng(seed).integers(3, vocab, size=prompt_length, dtype=np.int64)
    expected, fed, torch_cache = torch_greedy_steps(model, prompt, steps)
    results = []
    logits, cache = decoder.forward(prompt, decoder.empty_cache())
    results.append(compare_outputs("logits", 1, expected[0], logits, atol, rtol,
                                   label=f"prefill, {prompt_length} tokens"))
    for step, token in enumerate(fed, start=1):
        logits, cache = decoder.forward([token], cache)
        results.append(compare_outputs("logits", 1, expected[step], logits, atol, rtol,
                                       label=f"decode step {step}, past "
                                             f"{prompt_length + step - 1}"))
    for layer in range(decoder.layout.layers):
        for kind, reference in zip(("key", "value"), _layer_cache(torch_cache, layer)):
            results.append(compare_outputs(
                f"present.{layer}.{kind}", 1, reference.float().numpy(),
                cache[2 * layer + (kind == "value")], atol, rtol,
                label=f"after {steps} decode steps"))
    summary = parity_summary(results, atol, rtol)
    summary["cases"] = {"prompt_tokens": prompt_length, "decode_steps": steps}
    summary["lines"] = [r.line() for r in results if r.ok is False or not r.name.startswith(
        "present.")] + _cache_line(results)
    return summary


def _cache_line(results) -> list[str]:
    """One line for the whole cache (there are 2 x layers of them): the worst error."""
    cache = [r for r in results if r.name.startswith("present.")]
    if not cache:
        return []
    worst = max(cache, key=lambda r: r.max_abs)
    mark = "\u2713" if all(r.ok for r in cache) else "\u2717"
    return [f"  {mark} present.*.key/value ({len(cache)} tensors, {worst.label}): max abs "
            f"err {worst.max_abs:.2e} ({worst.name})"]


__all__ = ["check_decoder_parity", "DECODE_STEPS", "PROMPT_LENGTH", "torch_greedy_steps"]
