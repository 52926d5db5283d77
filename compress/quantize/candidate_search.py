"""The classifier and encoder candidates: what was asked for, then, when it fails its output
check, the next ones, cheapest first, and the fastest of those that pass.

A default that passes on one CPU and fails on another is no default: int8 kernels differ by
ISA (VPMADDUBSW saturates at 16 bits on AVX2, VNNI does not; ARM's dot products take int8
activations), so the same settings can lose different amounts. Instead of refusing, the
quantizer goes on through the method's fallbacks (:attr:`MethodSpec.fallbacks`: per-channel
weights, 7-bit weights, the sensitive nodes kept in float through the accuracy-aware search,
static int8 where calibration data was given), judges each with the same output check, times
those that pass interleaved in one run, and hands back the fastest. It refuses only when none
passes, naming the best figure reached. Every candidate is in the record, with why it lost.

The search itself is the one every quantize path runs (:mod:`.selection`); here are the
candidates, their judge (the output check, :class:`OutputJudge`) and the timing (median
latency, :func:`time_models`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgepack.compress.quantize.attempt import Attempt, Candidate
from edgepack.compress.quantize.methods import METHODS
from edgepack.compress.quantize.output_check import OutputCheckFailed
from edgepack.compress.quantize.quantize_config import QuantizationCheckError, QuantizeConfig
from edgepack.compress.quantize.selection import (Made, Outcome, SearchOptions, Timing, Tried,
                                                  Verdict, select)
from edgepack.compress.quantize.speed_check import SpeedCheckFailed, time_models


def first_candidate(config: QuantizeConfig, settings, choice: str) -> Candidate:
    """What the user asked for, resolved; repaired accuracy-aware at once only without the
    search (the search tries that as one of its later, slower candidates)."""
    spec = METHODS.get(config.method)
    repair = bool(spec.repairable and settings.accuracy_aware and not searching(config))
    label = "as asked" + (f" (preset {choice.split(' ')[0]})" if choice else "")
    return Candidate(label, config.method, settings, accuracy_aware=repair)


def searching(config: QuantizeConfig) -> bool:
    return bool(config.search and METHODS.get(config.method).fallbacks is not None)


def fallbacks(config: QuantizeConfig, settings, has_calibration: bool) -> list[Candidate]:
    """The method's next candidates, cheapest first, each resolved for this machine."""
    spec = METHODS.get(config.method)
    out = []
    for label, method, candidate_settings, repair in spec.fallbacks(settings, has_calibration):
        resolved, _ = METHODS.get(method).resolve(candidate_settings, config.provider)
        out.append(Candidate(label, method, resolved, repair))
    return out


def _entry(candidate: Candidate) -> dict:
    return {"label": candidate.label, "method": candidate.method,
            "settings": METHODS.get(candidate.method).describe(candidate.settings),
            "accuracy_aware": candidate.accuracy_aware}


@dataclass
class _Checked:
    """A candidate's attempt, and why it failed (None: it has not, yet)."""

    attempt: Attempt
    index: int
    error: Exception | None = None


class OutputJudge:
    """Makes each candidate in its own scratch folder and judges it by the output check.
    What the first candidate (what was asked for) raises beyond a failed output check is
    the stage's answer, as without a search; a later candidate's failure is its verdict."""

    def __init__(self, model_path: Path, config: QuantizeConfig, data, tolerance, work: Path):
        self.model_path, self.config, self.data = model_path, config, data
        self.tolerance, self.work = tolerance, work

    def _failures(self, index: int) -> type:
        return OutputCheckFailed if index == 0 else QuantizationCheckError

    def make(self, index: int, candidate: Candidate) -> Made:
        work = self.work / f"candidate{index}"
        work.mkdir(parents=True, exist_ok=True)
        checked = _Checked(Attempt(self.model_path, self.config, candidate, self.data,
                                   self.tolerance, work), index)
        try:
            path = checked.attempt.candidate()
        except self._failures(index) as exc:
            checked.error = exc
            return Made(None, state=checked)
        except QuantizationCheckError as exc:
            exc.last_attempt = checked.attempt
            raise
        return Made(path, state=checked)

    def __call__(self, made: Made) -> Verdict:
        checked = made.state
        if checked.error is None:
            try:
                checked.attempt.output_check(made.path)
            except self._failures(checked.index) as exc:
                checked.error = exc
            except QuantizationCheckError as exc:
                exc.last_attempt = checked.attempt
                raise
        check = checked.attempt.record.get("output_check", {})
        scores = [f["mean_cosine"] for f in check.get("outputs", {}).values()]
        figures = {"passed": bool(check.get("passed")), "min_cosine": min(scores, default=None),
                   "failures": check.get("failures", [])}
        if checked.error is None:
            return Verdict(True, "passed the output check", figures=figures)
        return Verdict(False, f"failed the output check: {_reason(checked.error)}",
                       figures=figures, score=_score(checked.attempt))

    def time(self, passing: list[Tried]) -> Timing:
        """The passing candidates and their input, timed interleaved in one run."""
        timed = time_models([self.model_path, *[t.made.path for t in passing]], self.config,
                            self.data.timing_feeds())
        base = timed[0]["p50_ms"]
        return Timing({"p50_ms": base},
                      [{"p50_ms": t["p50_ms"], "speedup": round(base / t["p50_ms"], 4)}
                       for t in timed[1:]],
                      [base / t["p50_ms"] for t in timed[1:]], what="speed (median latency)")


def search(model_path: Path, config: QuantizeConfig, settings, choice: str, data, tolerance,
           work: Path) -> tuple[Attempt, Path, dict | None]:
    """What was asked for, output-checked; when it fails (and the method has fallbacks), the
    fallbacks, and the fastest that passes. Returns the chosen attempt, its file and the
    record of every candidate (None when the first passed). Raises
    :class:`OutputCheckFailed` naming the best figure when none passes,
    :class:`SpeedCheckFailed` when none that passes is faster."""
    def candidates():
        yield first_candidate(config, settings, choice)
        if searching(config):
            yield from fallbacks(config, settings, bool(data.calibration))

    judge = OutputJudge(model_path, config, data, tolerance, work)
    options = SearchOptions(accept_first=True, time_alone=False, mark_chosen=False,
                            must_be_faster=config.speed_check and not config.allow_slower)
    outcome = select(candidates(), judge.make, judge, judge.time, options, _entry)
    if outcome.chosen is None:
        raise _refusal(outcome, config)
    chosen = outcome.chosen
    record = None
    if outcome.searched:
        record = {"candidates": outcome.entries, "chosen": chosen.entry["label"],
                  "why": _why(chosen.entry, outcome.entries)}
    return chosen.made.state.attempt, chosen.made.path, record


def _refusal(outcome: Outcome, config: QuantizeConfig) -> QuantizationCheckError:
    """No candidate kept: the first one's own error without a search; else what the best
    came to (the fastest, when some passed but none is faster)."""
    entries = outcome.entries
    if outcome.passing:
        fastest = outcome.fastest()
        error = SpeedCheckFailed(
            f"{len(outcome.passing)} candidates passed the output check but none is faster "
            f"than its input (fastest {fastest.entry['p50_ms']:.3f} ms vs "
            f"{outcome.input_timing['p50_ms']:.3f} ms, timed interleaved); pass "
            "--allow-slower to keep the fastest anyway", {"candidates": entries})
        error.last_attempt = fastest.made.state.attempt
        return error
    best = outcome.best_failing().made.state
    if not searching(config):
        error = best.error
    else:
        error = OutputCheckFailed(
            f"no candidate passed the output check ({len(entries)} tried: "
            f"{', '.join(e['label'] for e in entries)}); the best was "
            f"{best.attempt.candidate_spec.label}: {best.error}",
            {**getattr(best.error, "figures", {}), "candidates": entries})
    error.last_attempt = best.attempt
    return error


def _reason(exc: Exception) -> str:
    """What failed, in the check's own words (its list of failures when it has one)."""
    found = (getattr(exc, "figures", None) or {}).get("failures")
    if found:
        return "; ".join(found)
    return str(exc).strip().splitlines()[0]


def _score(attempt: Attempt) -> float:
    """The smallest mean cosine over the outputs (the accuracy when it was measured)."""
    check = attempt.record.get("output_check", {})
    outputs = check.get("outputs", {})
    score = min((f["mean_cosine"] for f in outputs.values()), default=-2.0)
    accuracy = (check.get("top1_accuracy") or {}).get("quantized")
    return min(score, accuracy) if accuracy is not None else score


def _why(chosen: dict, entries: list[dict]) -> str:
    speed = f" at {chosen['speedup']:.2f}x its input" if "speedup" in chosen else ""
    lost = [f"{e['label']}: {e['verdict']}" for e in entries if e is not chosen]
    return f"{chosen['label']} passed the output check{speed}; " + "; ".join(lost)
