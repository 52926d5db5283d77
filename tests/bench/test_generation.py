"""The generation benchmark on the tiny Llama: the figures it reports, the work each run does,
the interleaving order, the memory record, and the inputs it refuses."""

from __future__ import annotations

import pytest

from edgepack.bench.decoder import Decoder
from edgepack.bench.generation import (GenerationStats, check_context, generate_once, load_decoder,
                                       measure_generation, standard_prompt)
from edgepack.bench.tokenizer import load_tokenizer

PROMPT = [1, 40, 77, 120, 3, 18, 200, 15]


@pytest.fixture(scope="module")
def decoder(tiny_decoder):
    return load_decoder(tiny_decoder[1])


def test_stats_have_every_field_positive(decoder, tiny_decoder):
    [stats] = measure_generation([decoder], PROMPT, new_tokens=6, rounds=3)
    assert isinstance(stats, GenerationStats)
    assert (stats.model, stats.prompt_tokens, stats.new_tokens, stats.runs) == (
        str(tiny_decoder[1]), len(PROMPT), 6, 3)
    assert set(stats.prefill_ms) == {"p50", "p90", "mean"}
    assert set(stats.token_ms) == {"p50", "p90", "p99", "mean"}
    assert all(v > 0 for v in [*stats.prefill_ms.values(), *stats.token_ms.values()])
    # tokens/s is decode steps over decode seconds: the inverse of the mean step
    assert stats.decode_tokens_per_s == pytest.approx(1e3 / stats.token_ms["mean"], rel=1e-9)
    assert stats.size_bytes == tiny_decoder[1].stat().st_size   # no external data here
    assert stats.peak_rss_mb >= stats.loaded_rss_mb > 0
    assert stats.provider == "CPUExecutionProvider" and stats.threads == 1
    assert set(stats.to_dict()) >= {"model", "prompt_tokens", "new_tokens", "prefill_ms",
                                    "decode_tokens_per_s", "token_ms", "peak_rss_mb",
                                    "size_bytes", "runs"}


def test_a_run_is_greedy_decoding_without_eos_stop(decoder):
    prefill_ns, steps, tokens = generate_once(decoder, PROMPT, new_tokens=10)
    assert prefill_ns > 0 and len(steps) == 10
    assert tokens == list(decoder.greedy(PROMPT, 11))      # greedy() has no eos here


def test_plain_decoder_reports_no_peak_but_generation_growth(tiny_decoder):
    [stats] = measure_generation([Decoder(tiny_decoder[1])], PROMPT, new_tokens=2, rounds=1)
    assert stats.peak_rss_mb is None and stats.loaded_rss_mb is None
    assert stats.generation_rss_mb is not None and stats.generation_rss_mb >= 0


def _recording(decoder: Decoder, name: str, log: list) -> Decoder:
    """``decoder`` with its prefills (runs of several tokens) logged by ``name``."""
    forward = decoder.forward

    def logged(token_ids, cache):
        if len(token_ids) > 1:
            log.append(name)
        return forward(token_ids, cache)
    decoder.forward = logged
    return decoder


def test_rounds_interleave_and_flip_order(tiny_decoder):
    log: list[str] = []
    models = [_recording(Decoder(tiny_decoder[1]), name, log) for name in "AB"]
    stats = measure_generation(models, PROMPT, new_tokens=2, rounds=3, warmup=2)
    # warm-up of each model alone first, then A B, B A, A B
    assert log == ["A", "A", "B", "B"] + ["A", "B", "B", "A", "A", "B"]
    assert [s.runs for s in stats] == [3, 3]


def test_standard_prompt_has_exactly_the_tokens_asked(tiny_decoder):
    tokenizer = load_tokenizer(tiny_decoder[1].parent)
    for length in (1, 17, 200):
        ids = standard_prompt(tokenizer, length)
        assert len(ids) == length
        assert ids == standard_prompt(tokenizer, 200)[:length]   # one text, cut


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt_ids": []}, "the prompt is empty"),
    ({"new_tokens": 0}, "new_tokens must be >= 1"),
    ({"rounds": 0}, "rounds must be >= 1"),
    ({"warmup": 0}, "warmup must be >= 1, got 0 \\(the first warm-up run, alone, measures "
                    "memory\\)"),
    ({"prompt_ids": [1] * 250}, "250 prompt tokens and 32 new tokens need 283 positions; .* "
                                "has a context of 256"),
    ({"prompt_ids": [1, 100_000]}, "token ids outside 0..\\d+, the vocabulary"),
])
def test_bad_runs_are_refused(decoder, kwargs, message):
    settings = {"prompt_ids": PROMPT, "new_tokens": 32, "rounds": 1, "warmup": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        measure_generation([decoder], **settings)


def test_no_decoder_is_refused():
    with pytest.raises(ValueError, match="no decoder to benchmark"):
        measure_generation([], PROMPT)


def test_context_is_checked_before_loading(tiny_decoder):
    check_context(tiny_decoder[1], 200, 55)
    with pytest.raises(ValueError, match="needs 257 positions, more than the context .* \\(256"):
        check_context(tiny_decoder[1], 200, 56)
