"""The generation benchmark: prefill latency and decode speed of decoder LLMs at batch 1.

What one *run* of a model is: the prompt in one prefill (timed, greedy pick of the next token
included), then ``new_tokens`` decode steps of one token each (each timed: one forward with the
KV cache and the greedy pick). It never stops at eos, so every model does the same work.

Interleaved rounds: each round runs every model once, in turns, and the order flips every round
(A B, B A, ...), so a machine that drifts (a hot CPU, another process) hits all models alike.
Prefill latency has one sample per round; per-token latencies are pooled over the rounds;
decode tokens/s is decode steps over decode seconds.

Memory, honest in one process: :func:`load_decoder` records the RSS a model's session holds once
loaded, and its peak while loading; before the rounds, each model's warm-up generation runs alone
inside :class:`edgepack.bench.memory.PeakRSS` (KV cache, activations, arena growth). A model's peak is the
larger of its loading peak and its resident weights plus its generation peak. Models loaded
with plain :class:`Decoder` have no loading record: their ``peak_rss_mb`` is None and only the
generation's own growth (``generation_rss_mb``) is reported.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgepack.bench.decoder import Decoder, context_length
from edgepack.bench.decoder_memory import check_generation_fits
from edgepack.bench.latency import NOISY_SPREAD, LatencyStats
from edgepack.bench.memory import PeakRSS, rss_mb
from edgepack.bench.session import SessionOptions, make_session
from edgepack.bench.tokenizer import TextTokenizer, check_vocabulary, load_tokenizer
from edgepack.core.checks import check_budget
from edgepack.core.onnx_files import check_onnx_file

# The standard prompt's text: plain English prose, repeated and cut to the length asked for.
PROMPT_TEXT = (
    "The small river town woke slowly in the grey light of morning. Bakers had been at work "
    "for hours, and the smell of bread drifted along the narrow streets toward the harbour, "
    "where fishermen were mending their nets and talking about the weather. A bus stopped "
    "at the square, and a few travellers stepped down with their bags, looking around as if "
    "they had arrived somewhere they had only read about in books. Children ran past on "
    "their way to school, and an old man opened the shutters of his shop, as he had done "
    "every day for forty years. Nobody in the town was in a hurry, and that was exactly why "
    "people came to visit. ")


def standard_prompt(tokenizer: TextTokenizer, tokens: int) -> list[int]:
    """Exactly ``tokens`` ids of :data:`PROMPT_TEXT`, repeated as often as needed (with the
    special tokens the tokenizer itself adds, such as a bos)."""
    if tokens < 1:
        raise ValueError(f"the prompt needs at least 1 token, got {tokens}")
    ids = tokenizer.encode(PROMPT_TEXT)
    repeats = 1
    while len(ids) < tokens:
        repeats *= 2
        ids = tokenizer.encode(PROMPT_TEXT * repeats)
    return ids[:tokens]


@dataclass
class GenerationStats:
    """One model's generation figures (latencies in milliseconds, memory in MiB)."""

    model: str
    prompt_tokens: int
    new_tokens: int             # decode steps per run
    prefill_ms: dict            # p50, p90, mean over the rounds
    decode_tokens_per_s: float
    token_ms: dict              # p50, p90, p99, mean of every decode step of every round
    peak_rss_mb: float | None   # see the module docstring; None without a loading record
    size_bytes: int             # the .onnx file and its external data
    runs: int                   # timed rounds
    generation_rss_mb: float | None = None   # RSS growth of one generation alone
    loaded_rss_mb: float | None = None       # RSS the loaded session holds (weights, arena)
    noisy: bool = False         # decode steps' spread (IQR / median) above NOISY_SPREAD
    provider: str = ""
    threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def load_decoder(path: str | os.PathLike, options: SessionOptions | None = None) -> Decoder:
    """A :class:`Decoder` whose loading memory is recorded: the session's resident RSS after
    creation and one first one-token run, and the peak while that happened. The file check
    (which reads the whole model) runs before, outside that window, as ``edgepack bench``
    does."""
    check_onnx_file(path)
    with PeakRSS() as peak:
        session = make_session(path, options, check_file=False)
        decoder = Decoder(path, options, session=session)
        decoder.forward([0], decoder.empty_cache())   # lazy allocations belong to loading
        resident = rss_mb() - peak.before_mb
    decoder.load_memory = {"resident_mb": max(0.0, resident), "peak_mb": peak.delta_mb}
    return decoder


def generate_once(decoder: Decoder, prompt_ids: list[int], new_tokens: int,
                  check_logits: bool = False) -> tuple[int, list[int], list[int]]:
    """One run, greedy, no eos stop: the prefill's nanoseconds, each decode step's, and the
    ``new_tokens + 1`` tokens picked (the prefill picks the first). ``check_logits``: refuse
    NaN or Inf logits (exit 1), checked after each step's clock has stopped."""
    clock = time.perf_counter_ns
    t0 = clock()
    logits, cache = decoder.forward(prompt_ids, decoder.empty_cache())
    token = int(np.argmax(logits[-1]))
    prefill_ns = clock() - t0
    if check_logits:
        decoder.check_logits(logits[-1], 0)
    steps, tokens = [], [token]
    for step in range(1, new_tokens + 1):
        t0 = clock()
        logits, cache = decoder.forward([token], cache)
        token = int(np.argmax(logits[-1]))
        steps.append(clock() - t0)
        if check_logits:
            decoder.check_logits(logits[-1], step)
        tokens.append(token)
    return prefill_ns, steps, tokens


def check_budgets(prompt_tokens: int, new_tokens: int, rounds: int) -> None:
    """Each count at least 1 and within its stated bound (:data:`edgepack.core.checks.BUDGETS`)."""
    for name, value, unit in (("prompt_tokens", prompt_tokens, "tokens"),
                              ("new_tokens", new_tokens, "tokens"), ("rounds", rounds, "rounds")):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        check_budget("", name, value, unit)


def _check_run(decoders: list[Decoder], prompt_ids: list[int], new_tokens: int, rounds: int,
               warmup: int) -> None:
    if not decoders:
        raise ValueError("no decoder to benchmark; give at least one model")
    if not prompt_ids:
        raise ValueError("the prompt is empty: the prefill needs at least one token")
    check_budgets(len(prompt_ids), new_tokens, rounds)
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1, got {warmup} (the first warm-up run, alone, "
                         f"measures memory)")
    check_budget("", "warmup", warmup, "runs")
    for decoder in decoders:
        if decoder.context_length and len(prompt_ids) + new_tokens + 1 > decoder.context_length:
            raise ValueError(f"{len(prompt_ids)} prompt tokens and {new_tokens} new tokens "
                             f"need {len(prompt_ids) + new_tokens + 1} positions; "
                             f"{decoder.path} has a context of {decoder.context_length}")
        if max(prompt_ids) >= decoder.vocab_size or min(prompt_ids) < 0:
            raise ValueError(f"the prompt holds token ids outside 0..{decoder.vocab_size - 1}, "
                             f"the vocabulary of {decoder.path}")


def _warm_up(decoder: Decoder, prompt_ids: list[int], new_tokens: int, warmup: int
             ) -> float:
    """``warmup`` untimed runs of this model alone; the first one's RSS growth, in MiB. The
    first one also checks every step's logits: a model computing NaN is not timed."""
    with PeakRSS() as peak:
        generate_once(decoder, prompt_ids, new_tokens, check_logits=True)
    for _ in range(warmup - 1):
        generate_once(decoder, prompt_ids, new_tokens)
    return peak.delta_mb


def _peak_mb(decoder: Decoder, generation_mb: float) -> float | None:
    load = decoder.load_memory
    if not load:
        return None
    return max(load["peak_mb"], load["resident_mb"] + generation_mb)


def _threads(decoder: Decoder) -> int | None:
    options = getattr(decoder.session, "get_session_options", None)
    return options().intra_op_num_threads if options else None


def _stats(decoder, prompt_ids, new_tokens, prefill_ns, step_ns, generation_mb):
    prefill = LatencyStats.from_samples(np.asarray(prefill_ns) / 1e6)
    tokens = LatencyStats.from_samples(np.asarray(step_ns) / 1e6)
    return GenerationStats(
        model=str(decoder.path), prompt_tokens=len(prompt_ids), new_tokens=new_tokens,
        prefill_ms={"p50": prefill.p50, "p90": prefill.p90, "mean": prefill.mean},
        decode_tokens_per_s=len(step_ns) / (sum(step_ns) / 1e9),
        token_ms={"p50": tokens.p50, "p90": tokens.p90, "p99": tokens.p99,
                  "mean": tokens.mean},
        peak_rss_mb=_peak_mb(decoder, generation_mb), size_bytes=decoder.size_bytes(),
        runs=len(prefill_ns), generation_rss_mb=generation_mb,
        loaded_rss_mb=decoder.load_memory["resident_mb"] if decoder.load_memory else None,
        provider=decoder.session.get_providers()[0], threads=_threads(decoder),
        noisy=tokens.noisy)


def measure_generation(decoders: list[Decoder], prompt_ids: list[int], new_tokens: int = 32,
                       rounds: int = 5, warmup: int = 1) -> list[GenerationStats]:
    """Prefill and decode figures of each decoder on the same prompt, timed interleaved:
    ``warmup`` runs of each model alone (the first one measures its memory), then ``rounds``
    rounds of one run per model, the order flipped every round."""
    prompt_ids = [int(t) for t in prompt_ids]
    _check_run(decoders, prompt_ids, new_tokens, rounds, warmup)
    generation_mb = [_warm_up(d, prompt_ids, new_tokens, warmup) for d in decoders]
    prefill: list[list[int]] = [[] for _ in decoders]
    steps: list[list[int]] = [[] for _ in decoders]
    order = list(range(len(decoders)))
    gc_was_enabled = gc.isenabled()
    gc.disable()   # as timeit and edgepack.bench.latency do: no collection inside a timed step
    try:
        for _ in range(rounds):
            for index in order:
                prefill_ns, step_ns, _ = generate_once(decoders[index], prompt_ids, new_tokens)
                prefill[index].append(prefill_ns)
                steps[index].extend(step_ns)
            order.reverse()
    finally:
        if gc_was_enabled:
            gc.enable()
    return [_stats(d, prompt_ids, new_tokens, prefill[i], steps[i], generation_mb[i])
            for i, d in enumerate(decoders)]


def check_context(path: str | os.PathLike, prompt_tokens: int, new_tokens: int) -> None:
    """Refuse a prompt and continuation longer than the model's context (when config.json
    beside it says), before the model is loaded."""
    context = context_length(path)
    if context is not None and prompt_tokens + new_tokens + 1 > context:
        raise ValueError(f"--prompt-tokens {prompt_tokens} with --new-tokens {new_tokens} "
                         f"needs {prompt_tokens + new_tokens + 1} positions, more than the "
                         f"context of {path} ({context} tokens, from the config.json "
                         f"beside it)")


def bench_generation(models: list[str | os.PathLike], tokenizer: str | os.PathLike,
                     prompt_tokens: int = 128, new_tokens: int = 32, rounds: int = 5,
                     options: SessionOptions | None = None, warmup: int = 1
                     ) -> list[GenerationStats]:
    """``edgepack bench --generate``: load the tokenizer and the models (each one's memory
    recorded), check they fit each other, and measure them interleaved on the standard
    prompt of ``prompt_tokens`` tokens. ``options`` default: CPU, 1 thread."""
    if not models:
        raise ValueError("no model to benchmark; give at least one .onnx file")
    check_budgets(prompt_tokens, new_tokens, rounds)
    text = load_tokenizer(tokenizer)
    for path in models:
        check_context(path, prompt_tokens, new_tokens)
    prompt = standard_prompt(text, prompt_tokens)
    decoders = []
    for path in models:
        decoder = load_decoder(Path(path), options or SessionOptions())
        check_vocabulary(text, decoder.vocab_size, decoder.path)
        check_generation_fits(decoder, prompt_tokens, new_tokens,
                              remedy="lower --prompt-tokens or --new-tokens")
        decoders.append(decoder)
    return measure_generation(decoders, prompt, new_tokens, rounds, warmup)


def generation_table(stats: list[GenerationStats]) -> str:
    """A plain-text table: one line per model."""
    headers = ["model", "prefill p50 ms", "decode tok/s", "token p50 ms", "token p90 ms",
               "peak MB", "size MB"]
    rows = [[Path(s.model).name, f"{s.prefill_ms['p50']:.1f} @{s.prompt_tokens}",
             f"{s.decode_tokens_per_s:.1f}", f"{s.token_ms['p50']:.2f}",
             f"{s.token_ms['p90']:.2f}",
             "-" if s.peak_rss_mb is None else f"{s.peak_rss_mb:.0f}",
             f"{s.size_bytes / 2**20:.1f}"] for s in stats]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def noisy_warning(stats: GenerationStats) -> str:
    """A warning line for a model whose decode steps varied more than a quiet machine's."""
    return (f"{Path(stats.model).name}: decode-step spread (IQR/median) above "
            f"{NOISY_SPREAD:.0%}: the machine is busy; close other work or raise --rounds")


__all__ = ["GenerationStats", "PROMPT_TEXT", "bench_generation", "check_context",
           "generate_once", "generation_table", "load_decoder", "measure_generation",
           "noisy_warning", "standard_prompt"]
