"""How good a decoder LLM is, and how close a compressed one stays to its fp32 original.

Three numbers, as DESIGN.md's "Decoder LLMs" asks:

- **perplexity** on held-out text: ``exp`` of the mean negative log-likelihood of every
  predicted token of every window, teacher-forced (one prefill per window; row ``t`` of the
  logits predicts token ``t + 1``), log-softmax taken in float64 so a 49k-wide softmax loses
  nothing to rounding;
- **teacher-forced top-1 agreement** with the reference (the fp32 model): the fraction of
  positions whose argmax is the reference's, on the same windows;
- **greedy agreement** with the reference over fixed prompts: for each prompt the length of the
  common prefix of the two greedy continuations over the reference's length, averaged. Only the
  prefix counts: after the first different token the two models continue different texts, so
  later matches are chance.

The reference is computed once (:func:`lm_reference`), every candidate is compared with it
(:func:`lm_quality`) and judged by one gate (:class:`LMGate`)::

    reference = lm_reference(Decoder("fp32/model.onnx"), windows, prompts, max_new_tokens=32)
    quality = lm_quality(Decoder("int4/model.onnx"), windows, prompts, reference, 32)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from edgepack.bench.decoder import Decoder
from edgepack.core.checks import check_finite_fields


def token_windows(token_ids: list[int], length: int, count: int) -> list[list[int]]:
    """Cut a long token stream into ``count`` non-overlapping windows of ``length`` tokens,
    from the start; a stream too short for them is a ``ValueError`` saying how many fit."""
    if length < 2:
        raise ValueError(f"a window needs at least 2 tokens (one predicted), got length {length}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if len(token_ids) < length * count:
        raise ValueError(f"{len(token_ids)} tokens make only {len(token_ids) // length} "
                         f"windows of {length}; {count} were asked for")
    return [list(token_ids[i * length:(i + 1) * length]) for i in range(count)]


def check_windows(decoder: Decoder, windows: list[list[int]], min_length: int = 2) -> None:
    """Refuse what would give a wrong or meaningless figure: no windows, a window shorter
    than ``min_length``, one longer than the model's context (when known), or a token id
    outside the vocabulary (ONNX Runtime would gather garbage or fail deep inside)."""
    if not windows:
        raise ValueError("no windows of tokens to evaluate")
    vocab, context = decoder.vocab_size, decoder.context_length
    for index, window in enumerate(windows):
        if len(window) < min_length:
            raise ValueError(f"window {index} has {len(window)} tokens; at least {min_length} "
                             f"are needed")
        if context is not None and len(window) > context:
            raise ValueError(f"window {index} has {len(window)} tokens, longer than the "
                             f"model's context of {context} (config.json)")
        bad = [t for t in window if not 0 <= int(t) < vocab]
        if bad:
            raise ValueError(f"window {index} holds token id {bad[0]}, outside the model's "
                             f"vocabulary of {vocab} (ids 0..{vocab - 1})")


def log_likelihoods(logits: np.ndarray, window: list[int]) -> np.ndarray:
    """The log-probability (float64) that teacher-forced ``logits`` give each token of
    ``window`` after the first (row ``t`` predicts token ``t + 1``)."""
    rows = logits[:-1].astype(np.float64)
    shifted = rows - rows.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    targets = np.asarray(window[1:], dtype=np.int64)
    return log_probs[np.arange(len(targets)), targets]


def _teacher_forced(decoder: Decoder, windows: list[list[int]]
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One prefill per window: each window's token log-likelihoods and top-1 predictions."""
    check_windows(decoder, windows)
    likelihoods, top1 = [], []
    for window in windows:
        logits = decoder.sequence_logits(window)
        likelihoods.append(log_likelihoods(logits, window))
        top1.append(np.argmax(logits, axis=1))
    return likelihoods, top1


def perplexity_of(likelihoods: list[np.ndarray]) -> float:
    """``exp`` of the mean negative log-likelihood of every token of every window."""
    return float(math.exp(-np.concatenate(likelihoods).mean()))


def perplexity(decoder: Decoder, windows: list[list[int]]) -> float:
    """``exp`` of the mean negative log-likelihood over every predicted token of every
    window (windows weigh by their length)."""
    return perplexity_of(_teacher_forced(decoder, windows)[0])


def top1_predictions(decoder: Decoder, windows: list[list[int]]) -> list[np.ndarray]:
    """The argmax token at every position of every window, teacher-forced (row ``t``: the
    model's guess for token ``t + 1``)."""
    return _teacher_forced(decoder, windows)[1]


def _agreement(predictions: list[np.ndarray], reference_top1: list[np.ndarray]) -> float:
    if len(reference_top1) != len(predictions):
        raise ValueError(f"the reference has top-1 predictions for {len(reference_top1)} "
                         f"windows, but {len(predictions)} windows were given")
    same = total = 0
    for index, (mine, theirs) in enumerate(zip(predictions, reference_top1)):
        if len(mine) != len(theirs):
            raise ValueError(f"window {index} has {len(mine)} positions but the reference "
                             f"has {len(theirs)}: not the same windows")
        same += int(np.sum(mine == np.asarray(theirs)))
        total += len(mine)
    return same / total


def teacher_forced_agreement(decoder: Decoder, reference_top1: list[np.ndarray],
                             windows: list[list[int]]) -> float:
    """The fraction of positions, over all windows, where ``decoder``'s argmax equals the
    reference's (same windows, same order)."""
    return _agreement(top1_predictions(decoder, windows), reference_top1)


def greedy_tokens(decoder: Decoder, prompts: list[list[int]],
                  max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations of ``max_new_tokens`` tokens each, never stopping at eos, so two
    models are always compared over the same length."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    check_windows(decoder, prompts, min_length=1)
    context = decoder.context_length
    longest = max(len(p) for p in prompts) + max_new_tokens
    if context is not None and longest > context:
        raise ValueError(f"a prompt plus {max_new_tokens} new tokens is {longest} tokens, "
                         f"longer than the model's context of {context}")
    return [list(decoder.greedy(prompt, max_new_tokens)) for prompt in prompts]


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def greedy_agreement(tokens: list[list[int]], reference: list[list[int]]) -> float:
    """Mean over prompts of the common prefix's length over the reference's length: after
    the first different token the contexts differ, so later matches mean nothing."""
    if len(tokens) != len(reference) or not reference:
        raise ValueError(f"greedy agreement needs the same, non-zero number of continuations; "
                         f"got {len(tokens)} and {len(reference)} reference ones")
    if any(len(r) == 0 for r in reference):
        raise ValueError("a reference continuation is empty: nothing to agree with")
    return float(np.mean([common_prefix_length(t, r) / len(r)
                          for t, r in zip(tokens, reference)]))


@dataclass
class LMReference:
    """The fp32 model's answers, computed once and compared with every candidate."""

    top1: list[np.ndarray]
    greedy: list[list[int]]
    perplexity: float


def lm_reference(decoder: Decoder, windows: list[list[int]], prompts: list[list[int]],
                 max_new_tokens: int) -> LMReference:
    """The reference model's top-1 predictions on ``windows``, greedy continuations of
    ``prompts`` and perplexity on ``windows``."""
    likelihoods, top1 = _teacher_forced(decoder, windows)
    return LMReference(top1=top1, greedy=greedy_tokens(decoder, prompts, max_new_tokens),
                       perplexity=perplexity_of(likelihoods))


@dataclass
class LMQuality:
    """A candidate's language-model quality, absolute and against the reference."""

    perplexity: float
    perplexity_ratio: float     # candidate / reference: 1.0 is no loss, above is worse
    top1_agreement: float       # teacher-forced, fraction of positions
    greedy_agreement: float     # mean common-prefix fraction over the prompts

    def to_dict(self) -> dict:
        return asdict(self)


def lm_quality(decoder: Decoder, windows: list[list[int]], prompts: list[list[int]],
               reference: LMReference, max_new_tokens: int) -> LMQuality:
    """Measure ``decoder`` on the reference's windows and prompts (pass the same ones):
    one prefill per window gives both the perplexity and the top-1 agreement."""
    likelihoods, top1 = _teacher_forced(decoder, windows)
    ppl = perplexity_of(likelihoods)
    greedy = greedy_tokens(decoder, prompts, max_new_tokens)
    return LMQuality(perplexity=ppl, perplexity_ratio=ppl / reference.perplexity,
                     top1_agreement=_agreement(top1, reference.top1),
                     greedy_agreement=greedy_agreement(greedy, reference.greedy))


# The language-model gate's defaults, stated once: the [metric] kind is an LMGate, and the
# quantize flags on a decoder fill one.
MAX_PERPLEXITY_RATIO = 1.04
MIN_TOP1_AGREEMENT = 0.85
MIN_GREEDY_AGREEMENT = 0.0


@dataclass(frozen=True)
class LMGate:
    """What a language model must keep of its reference (the fp32 model), on held-out text:
    perplexity at most ``max_perplexity_ratio`` times the input's, teacher-forced top-1
    agreement at least ``min_top1_agreement``, greedy agreement (common prefix over fixed
    prompts) at least ``min_greedy_agreement`` (0: recorded, not gated, since one early
    different token ends the prefix; onnxruntime#29849).

    ``min_top1_agreement`` here is the share of token positions, over every held-out window,
    whose next-token argmax is the reference's; the quantize output check's field of that
    name (classifiers and encoders) is the share of held-out rows whose top-1 class is."""

    max_perplexity_ratio: float = MAX_PERPLEXITY_RATIO
    min_top1_agreement: float = MIN_TOP1_AGREEMENT
    min_greedy_agreement: float = MIN_GREEDY_AGREEMENT

    def __post_init__(self):
        check_finite_fields(self, "LMGate")
        if not self.max_perplexity_ratio >= 1.0:
            raise ValueError(f"LMGate.max_perplexity_ratio must be >= 1.0, got "
                             f"{self.max_perplexity_ratio}")
        for name in ("min_top1_agreement", "min_greedy_agreement"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"LMGate.{name} must be between 0 and 1, got {value}")

    def clearly_fails(self, quality) -> bool:
        """Far beyond the gate (a perplexity ratio three times as far above 1 as allowed,
        or top-1 agreement 0.1 below): a first look on a few windows is enough to refuse."""
        return (_figure(quality, "perplexity_ratio") - 1 > 3 * (self.max_perplexity_ratio - 1)
                or _figure(quality, "top1_agreement") < self.min_top1_agreement - 0.1)

    def failures(self, quality) -> list[str]:
        """What ``quality`` (an :class:`LMQuality`, or a record holding its figures) misses,
        one line each: the one judge of a language model, in the pipeline and in the
        decoder quantize search alike."""
        ratio = _figure(quality, "perplexity_ratio")
        top1 = _figure(quality, "top1_agreement")
        greedy = _figure(quality, "greedy_agreement")
        out = []
        if ratio > self.max_perplexity_ratio:
            out.append(f"perplexity ratio {ratio:.4f} > max_perplexity_ratio "
                       f"{self.max_perplexity_ratio}")
        if top1 < self.min_top1_agreement:
            out.append(f"top-1 agreement {top1:.4f} < min_top1_agreement "
                       f"{self.min_top1_agreement}")
        if greedy < self.min_greedy_agreement:
            out.append(f"greedy agreement {greedy:.4f} < min_greedy_agreement "
                       f"{self.min_greedy_agreement}")
        return out


def _figure(quality, name: str) -> float:
    return float(quality[name] if isinstance(quality, Mapping) else getattr(quality, name))


__all__ = ["LMGate", "LMQuality", "MAX_PERPLEXITY_RATIO", "MIN_GREEDY_AGREEMENT",
           "MIN_TOP1_AGREEMENT", "LMReference", "check_windows", "common_prefix_length",
           "greedy_agreement", "greedy_tokens", "lm_quality", "lm_reference", "perplexity",
           "log_likelihoods", "perplexity_of", "teacher_forced_agreement", "token_windows",
           "top1_predictions"]
