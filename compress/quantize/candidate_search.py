"""When the first candidate fails its output check: the next ones, cheapest first, and the
fastest of those that pass.

A default that passes on one CPU and fails on another is no default: int8 kernels differ by
ISA (VPMADDUBSW saturates at 16 bits on AVX2, VNNI does not; ARM's dot products take int8
activations), so the same settings can lose different amounts. Instead of refusing, the
quantizer goes on through the method's fallbacks (:attr:`MethodSpec.fallbacks`: per-channel
weights, 7-bit weights, the sensitive nodes kept in float through the accuracy-aware search,
static int8 where calibration data was given), judges each with the same output check, times
those that pass interleaved in one run, and hands back the fastest. It refuses only when none
passes, naming the best figure reached. Every candidate is in the record, with why it lost.
"""

from __future__ import annotations

from pathlib import Path

from edgepack.compress.quantize.attempt import Attempt, Candidate
from edgepack.compress.quantize.methods import METHODS
from edgepack.compress.quantize.output_check import OutputCheckFailed
from edgepack.compress.quantize.quantize_config import QuantizationCheckError, QuantizeConfig
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


def _entry(attempt: Attempt, verdict: str) -> dict:
    check = attempt.record.get("output_check", {})
    scores = [f["mean_cosine"] for f in check.get("outputs", {}).values()]
    return {"label": attempt.candidate_spec.label, "method": attempt.method,
            "settings": attempt.spec.describe(attempt.settings),
            "accuracy_aware": attempt.candidate_spec.accuracy_aware,
            "passed": bool(check.get("passed")), "min_cosine": min(scores, default=None),
            "failures": check.get("failures", []), "verdict": verdict}


def judge_candidate(model_path: Path, config: QuantizeConfig, candidate: Candidate, data,
                    tolerance, work: Path) -> tuple[Attempt, Path | None, Exception | None]:
    """Make and output-check one candidate: (attempt, its file or None, why it failed)."""
    work.mkdir(parents=True, exist_ok=True)
    attempt = Attempt(model_path, config, candidate, data, tolerance, work)
    try:
        path = attempt.candidate()
        attempt.output_check(path)
    except QuantizationCheckError as exc:
        return attempt, None, exc
    return attempt, path, None


def search(model_path: Path, config: QuantizeConfig, first: Attempt, first_error: Exception,
           settings, data, tolerance, work: Path) -> tuple[Attempt, Path, dict]:
    """Go through the fallbacks after ``first`` failed; return the chosen attempt, its file,
    and the record of every candidate. Raises :class:`OutputCheckFailed` naming the best
    figure when none passes, :class:`SpeedCheckFailed` when none that passes is faster."""
    tried = [_entry(first, f"failed the output check: {_reason(first_error)}")]
    passing: list[tuple[Attempt, Path]] = []
    failed = [(first, first_error)]
    for index, candidate in enumerate(fallbacks(config, settings, bool(data.calibration))):
        attempt, path, error = judge_candidate(model_path, config, candidate, data, tolerance,
                                               work / f"candidate{index + 1}")
        tried.append(_entry(attempt, "passed the output check" if path else
                            f"failed the output check: {_reason(error)}"))
        if path is None:
            failed.append((attempt, error))
        else:
            passing.append((attempt, path))
    if not passing:
        best, best_error = max(failed, key=lambda item: _score(item[0]))
        error = OutputCheckFailed(
            f"no candidate passed the output check ({len(tried)} tried: "
            f"{', '.join(t['label'] for t in tried)}); the best was "
            f"{best.candidate_spec.label}: {best_error}",
            {**getattr(best_error, "figures", {}), "candidates": tried})
        error.last_attempt = best
        raise error
    chosen, path = _fastest(model_path, config, passing, data, tried)
    record = {"candidates": tried, "chosen": chosen.candidate_spec.label,
              "why": _why(chosen, tried)}
    return chosen, path, record


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


def _fastest(model_path: Path, config: QuantizeConfig, passing, data, tried):
    """Time the passing candidates and their input interleaved in one run; the fastest wins
    (among those faster than the input, when the speed check is on and slower is refused)."""
    if len(passing) == 1:
        return passing[0]
    timed = time_models([model_path, *[path for _, path in passing]], config,
                        data.timing_feeds())
    base = timed[0]["p50_ms"]
    by_label = {t["label"]: t for t in tried}
    for (attempt, _), figures in zip(passing, timed[1:]):
        entry = by_label[attempt.candidate_spec.label]
        entry.update(p50_ms=figures["p50_ms"], speedup=round(base / figures["p50_ms"], 4))
    ranked = sorted(zip(passing, timed[1:]), key=lambda item: item[1]["p50_ms"])
    must_be_faster = config.speed_check and not config.allow_slower
    eligible = [item for item in ranked if not must_be_faster or item[1]["p50_ms"] < base]
    if not eligible:
        fastest = ranked[0][1]["p50_ms"]
        raise SpeedCheckFailed(
            f"{len(passing)} candidates passed the output check but none is faster than its "
            f"input (fastest {fastest:.3f} ms vs {base:.3f} ms, timed interleaved); pass "
            "--allow-slower to keep the fastest anyway", {"candidates": tried})
    winner = eligible[0][0]
    for (attempt, _path), _figures in ranked:
        if attempt is not winner[0]:
            by_label[attempt.candidate_spec.label]["verdict"] = "passed, but slower"
    return winner


def _why(chosen: Attempt, tried: list[dict]) -> str:
    entry = next(t for t in tried if t["label"] == chosen.candidate_spec.label)
    speed = f" at {entry['speedup']:.2f}x its input" if "speedup" in entry else ""
    lost = [f"{t['label']}: {t['verdict']}" for t in tried if t is not entry]
    return f"{entry['label']} passed the output check{speed}; " + "; ".join(lost)
