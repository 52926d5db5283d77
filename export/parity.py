"""Compare torch outputs with ONNX Runtime outputs, output by output.

Every output is checked and reported (a line with a check or cross mark, the max absolute
and relative error); the caller raises one :class:`ParityError` after all lines are known,
so a user sees every mismatch at once, not only the first.
"""

from __future__ import annotations

from dataclasses import dataclass, asdict

import numpy as np

from core.errors import CheckFailed


class ParityError(CheckFailed):
    """The exported model's outputs differ from torch's beyond the tolerance (exit code 1)."""

    exit_code = 1


@dataclass
class OutputParity:
    """How one output of one batch compares."""

    name: str
    batch: int
    shape_ok: bool
    max_abs: float
    max_rel: float
    ok: bool
    label: str = ""  # the case, e.g. "batch 8, axis 1 = 5"; "batch N" when empty

    def line(self) -> str:
        mark = "\u2713" if self.ok else "\u2717"
        case = self.label or f"batch {self.batch}"
        if not self.shape_ok:
            return f"  {mark} {self.name} ({case}): shape mismatch"
        return (f"  {mark} {self.name} ({case}): max abs err {self.max_abs:.2e}, "
                f"max rel err {self.max_rel:.2e}")

    def to_dict(self) -> dict:
        return asdict(self)


def compare_outputs(name: str, batch: int, expected: np.ndarray, actual: np.ndarray,
                    atol: float, rtol: float, label: str = "") -> OutputParity:
    """Compare one output with ``|a - e| <= atol + rtol * |e|`` elementwise."""
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    if expected.shape != actual.shape:
        return OutputParity(name, batch, False, float("inf"), float("inf"), False, label)
    if expected.size == 0:
        return OutputParity(name, batch, True, 0.0, 0.0, True, label)
    exp64 = expected.astype(np.float64)
    diff = np.abs(actual.astype(np.float64) - exp64)
    finite = bool(np.isfinite(actual).all())
    max_abs = float(diff.max()) if finite else float("inf")
    max_rel = float((diff / np.maximum(np.abs(exp64), 1e-12)).max()) if finite else float("inf")
    ok = finite and bool((diff <= atol + rtol * np.abs(exp64)).all())
    return OutputParity(name, batch, True, max_abs, max_rel, ok, label)


def parity_summary(results: list[OutputParity], atol: float, rtol: float) -> dict:
    """The record kept in the report: tolerance, worst errors, each output's numbers."""
    return {
        "ok": all(r.ok for r in results),
        "atol": atol,
        "rtol": rtol,
        "max_abs": max((r.max_abs for r in results), default=0.0),
        "max_rel": max((r.max_rel for r in results), default=0.0),
        "outputs": [r.to_dict() for r in results],
    }


def compare_sessions(reference, candidate, feeds_list, atol: float, rtol: float) -> dict:
    """Run two ONNX Runtime sessions on the same feeds; compare every output by name.

    ``feeds_list`` holds one feed dict per case (e.g. two batch sizes). The summary has a
    ``lines`` entry with one check or cross line per output and case.
    """
    names = [o.name for o in reference.get_outputs()]
    results = []
    for feeds in feeds_list:
        batch = int(next(iter(feeds.values())).shape[0]) if feeds else 1
        expected = reference.run(None, feeds)
        actual = dict(zip([o.name for o in candidate.get_outputs()], candidate.run(None, feeds)))
        for name, exp in zip(names, expected):
            if name not in actual:
                results.append(OutputParity(name, batch, False, float("inf"), float("inf"),
                                            False, f"batch {batch}, output missing"))
                continue
            results.append(compare_outputs(name, batch, exp, actual[name], atol, rtol))
    summary = parity_summary(results, atol, rtol)
    summary["lines"] = [r.line() for r in results]
    return summary
