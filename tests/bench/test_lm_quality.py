"""Language-model quality on the tiny Llama: perplexity against torch, agreement with itself
and with a perturbed copy, greedy tokens against transformers' generate, bad windows refused."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from edgepack.bench.decoder import Decoder
from edgepack.bench.lm_quality import (LMQuality, greedy_agreement, greedy_tokens, lm_quality,
                                       lm_reference, perplexity, teacher_forced_agreement,
                                       token_windows, top1_predictions)

WINDOWS = [[1, 5, 9, 40, 77, 120, 3, 18], [1, 200, 15, 15, 64, 31, 250, 7, 99, 4]]
PROMPTS = [[1, 5, 9], [1, 77]]


@pytest.fixture(scope="module")
def decoder(tiny_decoder):
    return Decoder(tiny_decoder[1])


@pytest.fixture(scope="module")
def torch_model(tiny_decoder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_decoder[0]).eval()


@pytest.fixture(scope="module")
def perturbed(tiny_decoder, tmp_path_factory):
    """A copy of the ONNX decoder with one large weight matrix pushed by noise."""
    import onnx
    from onnx import numpy_helper

    folder = tmp_path_factory.mktemp("perturbed")
    for item in tiny_decoder[1].parent.iterdir():
        if item.suffix != ".onnx" and item.is_file():
            shutil.copy(item, folder / item.name)
    model = onnx.load(str(tiny_decoder[1]))
    target = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(target)
    noise = np.random.default_rng(0).normal(0, 0.5 * weights.std(), weights.shape)
    target.CopyFrom(numpy_helper.from_array((weights + noise).astype(weights.dtype),
                                            target.name))
    onnx.save(model, str(folder / "model.onnx"))
    return Decoder(folder / "model.onnx")


def _torch_nll(model, windows) -> float:
    import torch

    losses = []
    with torch.no_grad():
        for window in windows:
            logits = model(torch.tensor([window])).logits[0, :-1].double()
            log_probs = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor(window[1:])
            losses.append(-log_probs[torch.arange(len(targets)), targets])
    return float(torch.cat(losses).mean())


def test_perplexity_is_exp_of_torch_nll(decoder, torch_model):
    expected = math.exp(_torch_nll(torch_model, WINDOWS))
    assert perplexity(decoder, WINDOWS) == pytest.approx(expected, rel=1e-4)


def test_perplexity_weighs_windows_by_their_tokens(decoder, torch_model):
    """Pooled over tokens, not a mean of per-window perplexities."""
    per_window = [perplexity(decoder, [w]) for w in WINDOWS]
    pooled = perplexity(decoder, WINDOWS)
    weights = [len(w) - 1 for w in WINDOWS]
    nll = sum(math.log(p) * n for p, n in zip(per_window, weights)) / sum(weights)
    assert pooled == pytest.approx(math.exp(nll), rel=1e-9)


def test_top1_matches_torch_argmax(decoder, torch_model):
    import torch

    with torch.no_grad():
        expected = torch_model(torch.tensor([WINDOWS[1]])).logits[0].argmax(-1).numpy()
    got = top1_predictions(decoder, WINDOWS)
    assert len(got) == 2 and len(got[1]) == len(WINDOWS[1])
    np.testing.assert_array_equal(got[1], expected)


def test_model_agrees_with_itself(decoder):
    reference = lm_reference(decoder, WINDOWS, PROMPTS, max_new_tokens=6)
    quality = lm_quality(decoder, WINDOWS, PROMPTS, reference, max_new_tokens=6)
    assert quality.top1_agreement == 1.0
    assert quality.greedy_agreement == 1.0
    assert quality.perplexity_ratio == pytest.approx(1.0, rel=1e-12)
    assert set(quality.to_dict()) == {"perplexity", "perplexity_ratio", "top1_agreement",
                                      "greedy_agreement"}


def test_greedy_tokens_equal_transformers_generate(decoder, torch_model):
    import torch

    got = greedy_tokens(decoder, PROMPTS, max_new_tokens=8)
    for prompt, tokens in zip(PROMPTS, got):
        with torch.no_grad():
            out = torch_model.generate(torch.tensor([prompt]), do_sample=False,
                                       max_new_tokens=8, min_new_tokens=8,
                                       attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
        assert tokens == out[0, len(prompt):].tolist()
        assert len(tokens) == 8    # fixed length: never stops at eos


def test_perturbed_model_disagrees(decoder, perturbed):
    windows = token_windows(list(np.random.default_rng(1).integers(3, 300, 96)), 32, 3)
    reference = lm_reference(decoder, windows, PROMPTS, max_new_tokens=8)
    quality = lm_quality(perturbed, windows, PROMPTS, reference, max_new_tokens=8)
    assert isinstance(quality, LMQuality)
    assert 0.0 <= quality.top1_agreement < 1.0
    assert teacher_forced_agreement(perturbed, reference.top1, windows) == quality.top1_agreement
    assert quality.perplexity != pytest.approx(reference.perplexity, rel=1e-3)


def test_greedy_agreement_counts_only_the_common_prefix():
    reference = [[1, 2, 3, 4], [5, 6, 7, 8]]
    # first prompt: differs at position 1, later tokens match by chance and do not count
    assert greedy_agreement([[1, 9, 3, 4], [5, 6, 7, 8]], reference) == pytest.approx(
        (1 / 4 + 1) / 2)
    assert greedy_agreement([[0, 2, 3, 4], [0, 6, 7, 8]], reference) == 0.0
    assert greedy_agreement(reference, reference) == 1.0


def test_token_windows_cut_without_overlap():
    stream = list(range(10))
    assert token_windows(stream, 3, 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(ValueError, match="make only 3 windows of 3; 4 were asked"):
        token_windows(stream, 3, 4)


@pytest.mark.parametrize("windows, message", [
    ([], "no windows"),
    ([[1]], "window 0 has 1 tokens; at least 2"),
    ([[1, 2], [1, 99999]], "window 1 holds token id 99999, outside the model's vocabulary"),
    ([[1, -1]], "token id -1"),
    ([[1] * 257], "257 tokens, longer than the model's context of 256"),
])
def test_bad_windows_are_refused(decoder, windows, message):
    with pytest.raises(ValueError, match=message):
        perplexity(decoder, windows)


def test_mismatched_reference_is_refused(decoder):
    reference = top1_predictions(decoder, WINDOWS)
    with pytest.raises(ValueError, match="reference has top-1 predictions for 2 windows"):
        teacher_forced_agreement(decoder, reference, WINDOWS[:1])
    with pytest.raises(ValueError, match="same, non-zero number"):
        greedy_agreement([[1]], [[1], [2]])
