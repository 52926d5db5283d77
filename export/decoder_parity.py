"""Parity of an exported decoder with its KV cache: prefills, then decode steps on a growing
cache, ONNX Runtime against torch, by the rule of :mod:`edgepack.export.parity`.

A decoder exported with ``text-generation-with-past`` is used one way on a device: one
prefill of the prompt, then one token at a time with the cache the previous step returned.
A graph can match torch on the prefill and still drift once the cache is fed back (a wrong
position id, a mask of the wrong length, a cache axis swapped, a sliding window that stops
masking), so the check walks that loop: the prefill's logits, the logits of every decode step,
and the cache after the last step. torch runs the model in float64 (the reference) and in
float32; ONNX Runtime's error against the reference must stay within a multiple of torch's
own float32 error, and its top-1 token must agree at every position (near ties excused).
The tokens fed back are the reference's greedy choices, so all three runs see the same
context at every step.

The cases: a short prompt with a few decode steps; for a model with a sliding window shorter
than its context, also decode steps across the window's edge and a prefill longer than the
window (short test windows and real ones of 512-4096 tokens alike).

torch runs with a full cache (``DynamicCache()``, every position kept): transformers' default
cache keeps only the last ``window - 1`` positions of a sliding layer, while the exported
graph keeps them all and masks the old ones, so only a full cache has the graph's layout.
The sliding-window mask is applied either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.bench.decoder import Decoder
from edgepack.export.parity import (PARITY_MULTIPLE, float64_twin, judge_output, reference_summary)

PROMPT_LENGTH = 12
DECODE_STEPS = 4
LOGIT_ROWS = 16   # a long prefill is judged on its last rows (its memory stays bounded)


@dataclass(frozen=True)
class DecoderCase:
    """One prefill of ``prompt_length`` random tokens, then ``steps`` greedy decode steps."""

    prompt_length: int
    steps: int
    title: str = ""    # what the case exercises ("" for the short prompt)

    def label(self, what: str) -> str:
        return f"{self.title}: {what}" if self.title else what

    def to_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_length, "decode_steps": self.steps,
                "title": self.title}


def sliding_window(config) -> int | None:
    """The model's sliding attention window in tokens, when it has one."""
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return window if isinstance(window, int) and not isinstance(window, bool) and window > 0 \
        else None


def parity_cases(config, context: int | None) -> list[DecoderCase]:
    """The short case, plus the sliding-window cases that fit in ``context``."""
    cases = [DecoderCase(PROMPT_LENGTH, DECODE_STEPS)]
    window = sliding_window(config)
    if window is not None:
        cases += [DecoderCase(max(1, window - 2), DECODE_STEPS,
                              f"decode across the sliding window of {window}"),
                  DecoderCase(window + 2, 2, f"prefill past the sliding window of {window}")]
    return [c for c in cases if context is None or c.prompt_length + c.steps <= context]


def _layer_cache(cache, layer: int):
    """(key, value) of one layer from a transformers cache object or a legacy tuple."""
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache[layer][0], cache[layer][1]


def _full_cache():
    """An empty cache that keeps every position (None where transformers has none)."""
    try:
        from transformers import DynamicCache
    except ImportError:
        return None
    return DynamicCache()


def torch_steps(model, prompt, steps: int, fed: list[int] | None = None):
    """torch's logits (float64 numpy, one array per step: the prefill's last
    :data:`LOGIT_ROWS` rows, then one row per decode step), the tokens fed back (``fed``, or
    the model's own greedy choices when None; never stopped at end of text) and the cache
    after the last step."""
    import torch

    fed_out, logits = [], []
    ids = torch.from_numpy(np.asarray(prompt, dtype=np.int64)).reshape(1, -1)
    cache = _full_cache()
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True,
                    **({"past_key_values": cache} if cache is not None else {}))
        logits.append(out.logits[0, -LOGIT_ROWS:].to(torch.float64).numpy())
        for step in range(steps):
            token = int(out.logits[0, -1].argmax()) if fed is None else int(fed[step])
            fed_out.append(token)
            out = model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values,
                        use_cache=True)
            logits.append(out.logits[0].to(torch.float64).numpy())
    return logits, fed_out, out.past_key_values


def torch_greedy_steps(model, prompt, steps: int):
    """torch's logits for the prefill and each greedy decode step, the greedy tokens fed
    back, and the cache after the last step (see :func:`torch_steps`)."""
    return torch_steps(model, prompt, steps)


def onnx_steps(decoder: Decoder):
    """ONNX Runtime's side in this process: (prompt, fed) -> (each step's logits, the cache
    after the last step). Another runner (another kernel path: :mod:`edgepack.bench.kernel_paths`)
    has the same signature."""
    def run(prompt, fed: list[int]):
        logits, cache = decoder.forward(prompt, decoder.empty_cache())
        out = [logits]
        for token in fed:
            logits, cache = decoder.forward([token], cache)
            out.append(logits)
        return out, cache
    return run


def _judge_case(case: DecoderCase, reference_model, torch_model, run_onnx, layers: int,
                vocab: int, seed: int, multiple: float) -> list:
    prompt = np.random.default_rng(seed).integers(3, vocab, size=case.prompt_length,
                                                  dtype=np.int64)
    expected, fed, reference_cache = torch_steps(reference_model, prompt, case.steps)
    mine, _, torch_cache = (torch_steps(torch_model, prompt, case.steps, fed)
                            if torch_model is not None else (None, None, None))
    actual, onnx_cache = run_onnx(prompt, fed)
    actual = [actual[0][-LOGIT_ROWS:]] + list(actual[1:])
    kept = min(LOGIT_ROWS, case.prompt_length)
    labels = [case.label(f"prefill, {case.prompt_length} tokens" + (
        f", last {kept} rows" if kept < case.prompt_length else ""))]
    labels += [case.label(f"decode step {k}, past {case.prompt_length + k - 1}")
               for k in range(1, case.steps + 1)]
    results = [judge_output("logits", expected[i], None if mine is None else mine[i],
                            actual[i], multiple=multiple, label=labels[i])
               for i in range(len(labels))]
    after = case.label(f"after {case.steps} decode steps")
    for layer in range(layers):
        for index, kind in enumerate(("key", "value")):
            reference = _layer_cache(reference_cache, layer)[index].double().numpy()
            torch32 = None if torch_cache is None else \
                _layer_cache(torch_cache, layer)[index].double().numpy()
            results.append(judge_output(f"present.{layer}.{kind}", reference[0], None
                                        if torch32 is None else torch32[0],
                                        onnx_cache[2 * layer + index][0], multiple=multiple,
                                        label=after, top1=False))
    return results


def check_decoder_parity(model, onnx_path: Path, multiple: float = PARITY_MULTIPLE,
                         seed: int = 0, cases: list[DecoderCase] | None = None,
                         run_onnx=None) -> dict:
    """Compare ``model`` (a transformers causal LM in torch, float32) with the ONNX decoder
    at ``onnx_path`` on every case of :func:`parity_cases` (or ``cases``); the summary's
    ``lines`` say, per step, the errors, with one line for the whole cache. ``run_onnx``:
    how ONNX Runtime runs the steps (default: :func:`onnx_steps` in this process)."""
    from edgepack.bench.decoder import context_length

    decoder = Decoder(onnx_path)
    config = model.config
    cases = parity_cases(config, context_length(onnx_path)) if cases is None else cases
    twin, why = float64_twin(model)
    reference_model, torch_model = (twin, model) if twin is not None else (model, None)
    run_onnx = run_onnx or onnx_steps(decoder)
    results = []
    for index, case in enumerate(cases):
        results += _judge_case(case, reference_model, torch_model, run_onnx,
                               decoder.layout.layers, int(config.vocab_size), seed + index,
                               multiple)
    summary = reference_summary(results, multiple, "torch float64" if twin is not None
                                else f"torch float32 ({why})")
    summary["cases"] = [c.to_dict() for c in cases]
    summary["lines"] = _condensed_lines(results)
    return summary


def _condensed_lines(results) -> list[str]:
    """Every logits line and every failing line; one line for the rest of the cache (there
    are 2 x layers of them per case)."""
    cache = [r for r in results if r.name.startswith("present.")]
    lines = [r.line() for r in results if not r.ok or not r.name.startswith("present.")]
    if cache:
        worst = max(cache, key=lambda r: r.error / r.allowed if r.allowed else np.inf)
        mark = "\u2713" if all(r.ok for r in cache) else "\u2717"
        lines.append(f"  {mark} present.*.key/value ({len(cache)} tensors): worst "
                     f"{worst.name} ({worst.label}), error {worst.error:.1e}, allowed "
                     f"{worst.allowed:.1e}")
    return lines


__all__ = ["DecoderCase", "check_decoder_parity", "DECODE_STEPS", "onnx_steps", "parity_cases",
           "PROMPT_LENGTH", "sliding_window", "torch_greedy_steps", "torch_steps"]
