"""The decoder search's judge: a candidate's language-model quality against its fp32 input,
held to the gate passed in (:class:`edgepack.bench.lm_quality.LMGate`, or anything with its
``failures`` and ``clearly_fails``).

The input's answers are computed once (:func:`edgepack.bench.lm_quality.lm_reference`:
teacher-forced top-1 and perplexity on held-out token windows, greedy continuations of fixed
prompts); each candidate is measured on the same windows and prompts. With enough windows,
a quarter of them is a first look (:meth:`LMJudge.screen`): a candidate that misses the gate
by far there (:meth:`LMGate.clearly_fails`) is refused without the rest.
"""

from __future__ import annotations

from pathlib import Path

from edgepack.bench.decoder import Decoder
from edgepack.bench.lm_quality import LMReference, lm_quality, lm_reference
from edgepack.bench.session import SessionOptions
from edgepack.compress.quantize.selection import Made, Verdict


def screen_windows(model_path: Path, options: SessionOptions, eval_windows, prompts,
                   new_tokens: int) -> tuple[int, LMReference] | None:
    """A quarter of the windows and the reference on them, for the quick first look at each
    candidate; None when there are too few windows for it to save anything."""
    windows = len(eval_windows) // 4
    if windows < 2:
        return None
    return windows, lm_reference(Decoder(model_path, options), eval_windows[:windows], prompts,
                                 new_tokens)


class LMJudge:
    """Judges a decoder file by ``gate`` against ``reference`` (the input's answers on
    ``eval_windows`` and ``prompts``); ``screen``: (windows, the reference on them) for the
    first look, or None."""

    def __init__(self, gate, reference: LMReference, eval_windows, prompts, new_tokens: int,
                 options: SessionOptions, screen: tuple[int, LMReference] | None = None):
        self.gate, self.reference, self.options = gate, reference, options
        self.eval_windows, self.prompts, self.new_tokens = eval_windows, prompts, new_tokens
        self.screen_windows = screen
        self._decoder: tuple[Path, Decoder] | None = None

    def decoder(self, path: Path) -> Decoder:
        """One session per candidate, shared by the first look and the full judgement."""
        if self._decoder is None or self._decoder[0] != path:
            self._decoder = (path, Decoder(path, self.options))
        return self._decoder[1]

    def screen(self, made: Made) -> Verdict | None:
        """The verdict on the first windows when it misses the gate by far, else None."""
        windows, reference = self.screen_windows
        quality = lm_quality(self.decoder(made.path), self.eval_windows[:windows],
                             self.prompts, reference, self.new_tokens)
        return self._verdict(quality, windows) if self.gate.clearly_fails(quality) else None

    def __call__(self, made: Made) -> Verdict:
        quality = lm_quality(self.decoder(made.path), self.eval_windows, self.prompts,
                             self.reference, self.new_tokens)
        return self._verdict(quality, len(self.eval_windows))

    def _verdict(self, quality, judged: int) -> Verdict:
        missed = self.gate.failures(quality)
        partial = judged < len(self.eval_windows)
        why = "; ".join(missed) + (f" (on the first {judged} windows: far beyond the gate, "
                                   "not judged further)" if partial else "")
        return Verdict(not missed, "failed the quality gate" if missed else
                       "passed the quality gate", why=why,
                       figures={"judged_windows": judged, **quality.to_dict()},
                       score=-quality.perplexity_ratio)


__all__ = ["LMJudge", "screen_windows"]
