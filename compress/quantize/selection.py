"""The one candidate search of every quantize path: candidates in order, each made and judged
by the judge passed in, the passing ones timed interleaved with their input, the fastest
passing one that is faster kept, and every candidate recorded with its verdict.

The classifier and encoder path (:mod:`.candidate_search`) judges by the output check and the
decoder path (:mod:`.decoder_quantize`) by the language-model gate; what else differs is an
option of :class:`SearchOptions`, not a second search::

    outcome = select(candidates, make, judge, timer, SearchOptions(accept_first=True))
    outcome.chosen          # the kept candidate (a Tried), or None: the caller refuses,
    outcome.entries         # naming outcome.best_failing() or outcome.fastest()

- ``make(index, candidate)``: a :class:`Made` (its file, figures for its entry, the caller's
  state), or a string saying why it could not be made (recorded as "not made");
- ``judge(made)``: a :class:`Verdict` in the judge's own words (its figures, passed or not,
  how close a failure came); ``options.screen(made)``: a cheaper first look whose verdict,
  when it returns one, is final (the decoder's quarter of the windows);
- ``options.probe``: a quick speed ratio against the input before judging; a candidate below
  its minimum cannot win and is not judged;
- ``options.accept_first``: the first candidate is kept as soon as it passes (the classifier
  path tries its fallbacks only when what was asked for fails);
- ``timer(tried)``: a :class:`Timing` of the passing ones, interleaved with the input;
  ``options.timed`` off: the first passing one is kept; ``options.time_alone`` off: a lone
  passing candidate is kept untimed (its own speed check follows);
- ``options.must_be_faster``: only a candidate faster than its input may be kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable


@dataclass
class Made:
    """A made candidate: its file, figures for its entry, and the caller's own state."""

    path: Path | None
    figures: dict = field(default_factory=dict)
    state: Any = None


@dataclass
class Verdict:
    """What the judge says of one candidate. ``verdict`` and ``why`` (when not None) go into
    its entry after ``figures``; ``score`` ranks failures (higher: closer to passing)."""

    passed: bool
    verdict: str
    why: str | None = None
    figures: dict = field(default_factory=dict)
    score: float = float("-inf")


@dataclass(frozen=True)
class Probe:
    """A quick speed ratio over the input (``measure(made)``); below ``minimum`` a candidate
    cannot win. ``what`` names the measure in the record."""

    measure: Callable[[Made], float]
    minimum: float
    what: str


@dataclass
class Timing:
    """The timer's answer: the input's figures, each candidate's figures (recorded in its
    entry) and its speed over the input (> 1: faster), in the order given."""

    input: dict
    figures: list[dict]
    speedups: list[float]
    what: str = "speed"


@dataclass
class SearchOptions:
    accept_first: bool = False
    probe: Probe | None = None
    screen: Callable[[Made], Verdict | None] | None = None
    timed: bool = True
    time_alone: bool = True
    must_be_faster: bool = True
    mark_chosen: bool = True    # the kept one's verdict becomes "chosen"


@dataclass
class Tried:
    """One candidate of the search: its record entry, what was made, what the judge said."""

    candidate: Any
    entry: dict
    made: Made | None = None
    verdict: Verdict | None = None
    speedup: float | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is not None and self.verdict.passed


@dataclass
class Outcome:
    tried: list[Tried]
    chosen: Tried | None = None
    input_timing: dict = field(default_factory=dict)

    @property
    def entries(self) -> list[dict]:
        return [t.entry for t in self.tried]

    @property
    def passing(self) -> list[Tried]:
        return [t for t in self.tried if t.passed]

    @property
    def searched(self) -> bool:
        """More than the first candidate was looked at."""
        return len(self.tried) > 1

    def best_failing(self) -> Tried | None:
        """The judged candidate that came closest to passing."""
        judged = [t for t in self.tried if t.verdict is not None and not t.passed]
        return max(judged, key=lambda t: t.verdict.score, default=None)

    def fastest(self) -> Tried | None:
        timed = [t for t in self.passing if t.speedup is not None]
        return max(timed, key=lambda t: t.speedup, default=None)


def select(candidates: Iterable, make: Callable[[int, Any], Made | str],
           judge: Callable[[Made], Verdict], timer: Callable[[list[Tried]], Timing],
           options: SearchOptions, entry: Callable[[Any], dict]) -> Outcome:
    """Make, judge and time ``candidates`` (``entry(candidate)``: the start of its record
    entry); the outcome names the kept one, or None."""
    outcome = Outcome([])
    for index, candidate in enumerate(candidates):
        tried = Tried(candidate, entry(candidate))
        outcome.tried.append(tried)
        _judge(tried, index, make, judge, options)
        if options.accept_first and index == 0 and tried.passed:
            outcome.chosen = tried
            return outcome
    passing = outcome.passing
    if not passing:
        return outcome
    if not options.timed:
        outcome.chosen = _first(passing, options)
    elif len(passing) == 1 and not options.time_alone:
        outcome.chosen = passing[0]
    else:
        timing = timer(passing)
        outcome.input_timing = timing.input
        for tried, figures, speedup in zip(passing, timing.figures, timing.speedups):
            tried.entry.update(figures)
            tried.speedup = speedup
        outcome.chosen = _fastest(passing, options, timing.what)
    return outcome


def _judge(tried: Tried, index: int, make, judge, options: SearchOptions) -> None:
    made = make(index, tried.candidate)
    if isinstance(made, str):
        tried.entry.update(verdict="not made", why=made)
        return
    tried.made = made
    tried.entry.update(made.figures)
    if options.probe is not None:
        probe = options.probe
        ratio = probe.measure(made)
        tried.entry["probe_speedup"] = ratio
        if ratio < probe.minimum:
            tried.entry.update(verdict="slower than the input on a first probe",
                               why=f"{ratio:.2f}x the input's {probe.what} (< "
                                   f"{probe.minimum}); quality not judged")
            return
    verdict = options.screen(made) if options.screen is not None else None
    tried.verdict = verdict if verdict is not None else judge(made)
    tried.entry.update(tried.verdict.figures)
    tried.entry["verdict"] = tried.verdict.verdict
    if tried.verdict.why is not None:
        tried.entry["why"] = tried.verdict.why


def _first(passing: list[Tried], options: SearchOptions) -> Tried:
    """Nothing timed: the first passing candidate is kept."""
    for position, tried in enumerate(passing):
        if position == 0 and options.mark_chosen:
            tried.entry.update(verdict="chosen", why="")
        elif position:
            tried.entry.update(verdict="passed, not chosen",
                               why="the first passing candidate is kept when nothing is timed "
                                   "(speed check off)")
    return passing[0]


def _fastest(passing: list[Tried], options: SearchOptions, what: str) -> Tried | None:
    """The fastest passing candidate that may be kept; the others' verdicts say why not."""
    ranked = sorted(passing, key=lambda t: t.speedup, reverse=True)
    eligible = [t for t in ranked if t.speedup > 1.0 or not options.must_be_faster]
    chosen = eligible[0] if eligible else None
    for tried in ranked:
        if tried is chosen:
            if options.mark_chosen:
                tried.entry["verdict"] = "chosen"
        elif tried.speedup <= 1.0 and options.must_be_faster:
            tried.entry.update(verdict="passed, but not faster than the input",
                               why=f"{tried.speedup:.2f}x the input's {what}")
        else:
            tried.entry.update(verdict="passed, but slower",
                               why=f"{tried.speedup:.2f}x vs the chosen {chosen.speedup:.2f}x")
    return chosen


__all__ = ["Made", "Outcome", "Probe", "SearchOptions", "Timing", "Tried", "Verdict",
           "select"]
