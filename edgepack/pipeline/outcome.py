"""What a run delivered: a model to deploy, or every reason it has none.

A run exists to produce a deployable model. When a recipe has a stage that makes an ONNX
model (export, quantize, ...), only a kept ONNX model counts; a recipe of torch stages alone
delivers its last kept module. A run whose stages kept nothing of that kind failed, whatever
each stage says on its own: the report says so under ``outcome`` with every stage's reasons
(each failing figure, not the first line of a message), and the command exits 1.
"""

from __future__ import annotations

from pathlib import Path

from edgepack.core.errors import CheckFailed
from edgepack.core.stage import StageConfig, spec_for


class NothingDeployable(CheckFailed):
    """A run kept no deployable model (exit code 1); the message lists every reason."""

    exit_code = 1


def message_lines(exc: BaseException) -> list[str]:
    """Every non-empty line of an exception's message (a parity failure names each output
    on a line of its own)."""
    return [line.strip() for line in str(exc).splitlines() if line.strip()]


def failure_entry(exc: BaseException) -> dict:
    """A failed stage's report fields: ``reasons`` (every line) and ``reason`` (all of them,
    in one line)."""
    lines = message_lines(exc) or [type(exc).__name__]
    head, rest = lines[0], lines[1:]
    return {"reason": head + (" " + "; ".join(rest) if rest else ""), "reasons": lines}


def judged_entry(reasons: list[str]) -> dict:
    """A judged stage's report fields from the keep rule's reasons (empty: kept)."""
    return {"reason": "; ".join(reasons), "reasons": list(reasons)}


def _wants_onnx(stages: list[StageConfig]) -> bool:
    return any(spec_for(config).produces in ("onnx", "package") for config in stages)


def run_outcome(stages: list[StageConfig], entries: list[dict], final_artifact: str | None,
                teacher_artifact: str | None = None) -> dict:
    """``{"deployable": bool, "final_artifact": ..., "reasons": [...]}`` for a finished run:
    deployable when a stage was kept and, if the recipe makes ONNX, the final artifact is an
    ONNX model; ``reasons`` lists every stage not kept, with every reason it gave."""
    wants_onnx = _wants_onnx(stages)
    kept_something = final_artifact is not None and final_artifact != teacher_artifact
    deployable = kept_something and (not wants_onnx or Path(final_artifact).suffix == ".onnx")
    reasons = []
    if not deployable:
        for entry in entries:
            if not entry.get("kept", True):
                lines = entry.get("reasons") or [entry.get("reason") or "not kept"]
                reasons.append(f"{entry['name']}: " + " | ".join(lines))
        if not reasons:
            reasons.append("no stage made a model" if not entries else
                           "the stages kept only the teacher")
    return {"deployable": deployable, "final_artifact": final_artifact,
            "wanted": "an ONNX model" if wants_onnx else "a kept model", "reasons": reasons}


def check_outcome(report: dict) -> None:
    """Raise :class:`NothingDeployable` (exit 1) for a report whose run kept nothing to
    deploy, naming every reason; nothing for a deployable run."""
    outcome = report.get("outcome") or {}
    if outcome.get("deployable", True):
        return
    raise NothingDeployable(f"the run kept no deployable model ({outcome['wanted']}); every "
                            f"stage's reasons are in report.json and report.md:\n"
                            + "\n".join(outcome["reasons"]))


def outcome_markdown(report: dict) -> str:
    """report.md's section for a run that kept nothing to deploy ("" otherwise)."""
    outcome = report.get("outcome") or {}
    if outcome.get("deployable", True):
        return ""
    items = "\n".join(f"- {reason}" for reason in outcome["reasons"])
    return (f"\n## No deployable model\n\nThe run kept no {outcome['wanted']}; it failed "
            f"(exit code 1). Every reason:\n\n{items}\n")


__all__ = ["NothingDeployable", "check_outcome", "failure_entry", "judged_entry",
           "message_lines", "outcome_markdown", "run_outcome"]
