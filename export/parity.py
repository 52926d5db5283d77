"""Compare an exported model's outputs with torch's, output by output.

Two kinds of comparison live here:

- **Against torch, by a rule derived from the numerics** (:func:`judge_output`), for every
  export. A constant tolerance passes on one CPU's kernels and fails on another's (the same
  decoder is 4e-5 off torch on AVX2 and 4e-4 on AMX, both correct), so none is used. torch runs
  the model twice, in float64 (the reference) and in float32 (what was exported); ONNX
  Runtime's float32 output and torch's own float32 output are each compared with the float64
  reference. Each error is the largest absolute difference divided by the output's scale (the
  root mean square of the reference), and ONNX Runtime passes when its error is at most
  :data:`PARITY_MULTIPLE` times torch's: never less than that multiple of
  :data:`ERROR_FLOOR` (outputs torch's float32 gets exactly right), never more than
  :data:`MAX_ERROR` (a model too noisy to be judged by its own error). Logits must also
  agree on the top-1 token at every position, except where the reference's lead over the
  runner-up is within the allowed error (a near tie either side may break). The rule is the
  same on every kernel path; a model whose one layer is 1% off fails it by orders of
  magnitude.
- **Between two ONNX Runtime sessions** of one model (:func:`compare_sessions`: a packaged
  ``.ort`` file, an optimized copy), elementwise ``|a - e| <= atol + rtol * |e|``.

Every output is checked and reported (a line with a check or cross mark and its figures); the
caller raises one :class:`ParityError` after all lines are known, so a user sees every
mismatch at once, not only the first.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, asdict

import numpy as np

from edgepack.core.errors import CheckFailed

# ONNX Runtime's error against the float64 reference may be this many times torch's own
# float32 error on the same inputs. Measured ratios sit between 0.2 and 4 on every model and
# kernel path tried (docs/export.md); a layer perturbed by 1% gives ratios of 1e3 and more.
PARITY_MULTIPLE = 16.0
# The smallest float32 error an output is allowed, as a share of its scale: 64 float32 epsilons
# (7.6e-6), for outputs torch's float32 run gets exactly (or nearly) right.
ERROR_FLOOR = 64 * float(np.finfo(np.float32).eps)
# An error above this share of the output's scale is never accepted, whatever torch's own
# float32 error: a model whose float32 run is that far from its float64 run (noise drawn at
# run time, a numerically unstable layer) cannot be judged by its own error.
MAX_ERROR = 1e-2
# Where the model cannot run in float64, torch's float32 output is the reference and ONNX
# Runtime's error, normalised the same way, may be at most this (recorded as such).
FLOAT32_REFERENCE_BOUND = 1e-4


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


@dataclass
class ReferenceParity:
    """How one output compares with the float64 reference, against torch's float32 run."""

    name: str
    batch: int
    label: str
    shape_ok: bool
    scale: float           # root mean square of the reference output
    error: float           # ONNX Runtime: max |ort - reference| / scale
    torch_error: float | None   # torch float32: max |torch - reference| / scale (None: no
                                # float64 reference, torch float32 is the reference)
    allowed: float         # the bound ``error`` is held to
    max_abs: float         # ONNX Runtime's largest absolute difference
    ok: bool
    top1: dict | None = None   # logits: {"positions", "agree", "near_ties"}

    def line(self) -> str:
        mark = "\u2713" if self.ok else "\u2717"
        case = self.label or f"batch {self.batch}"
        if not self.shape_ok:
            return f"  {mark} {self.name} ({case}): shape mismatch"
        torch_part = ("torch fp32 " + f"{self.torch_error:.1e}" if self.torch_error is not None
                      else "reference is torch fp32")
        text = (f"  {mark} {self.name} ({case}): error {self.error:.1e} of scale "
                f"{self.scale:.3g} ({torch_part}; allowed {self.allowed:.1e}; max abs "
                f"{self.max_abs:.1e})")
        if self.top1 is not None:
            text += f", top-1 {self.top1['agree']}/{self.top1['positions']}"
            if self.top1["near_ties"]:
                text += f" ({self.top1['near_ties']} near ties excused)"
        return text

    def to_dict(self) -> dict:
        return asdict(self)


def _scaled_error(expected64: np.ndarray, actual: np.ndarray, scale: float) -> float:
    if not np.isfinite(actual).all():
        return float("inf")
    return float(np.abs(actual.astype(np.float64) - expected64).max()) / scale


def _top1(reference: np.ndarray, actual: np.ndarray, allowed_abs: float) -> dict:
    """Top-1 agreement over the last axis; a disagreement where the reference's lead over its
    runner-up is within ``2 * allowed_abs`` (both may move by that much) is a near tie."""
    ref = reference.reshape(-1, reference.shape[-1])
    act = actual.reshape(-1, actual.shape[-1])
    differ = np.argmax(ref, axis=1) != np.argmax(act, axis=1)
    if ref.shape[1] > 1:
        top2 = np.partition(ref, -2, axis=1)[:, -2:]
        lead = top2[:, 1] - top2[:, 0]
    else:
        lead = np.full(ref.shape[0], np.inf)
    near_ties = int((differ & (lead <= 2 * allowed_abs)).sum())
    return {"positions": int(ref.shape[0]), "agree": int((~differ).sum()),
            "near_ties": near_ties, "ok": int(differ.sum()) == near_ties}


def judge_output(name: str, reference, torch32, actual, *, multiple: float = PARITY_MULTIPLE,
                 label: str = "", batch: int = 1, top1: bool | None = None
                 ) -> ReferenceParity:
    """Judge ONNX Runtime's ``actual`` output against the float64 ``reference``, allowed
    ``multiple`` times torch's float32 error (``torch32``; None: ``reference`` is torch's float32
    output and :data:`FLOAT32_REFERENCE_BOUND` is the bound). ``top1`` (default: for outputs
    named ``logits``) also requires top-1 agreement on the last axis, near ties excused."""
    reference = np.asarray(reference)
    actual = np.asarray(actual)
    top1 = name == "logits" if top1 is None else top1
    if reference.shape != actual.shape:
        return ReferenceParity(name, batch, label, False, 0.0, float("inf"), None,
                               0.0, float("inf"), False)
    if reference.size == 0:
        return ReferenceParity(name, batch, label, True, 0.0, 0.0, None, 0.0, 0.0, True)
    ref64 = reference.astype(np.float64)
    scale = float(np.sqrt(np.mean(ref64 ** 2))) or 1.0
    if torch32 is None:
        torch_error, allowed = None, FLOAT32_REFERENCE_BOUND
    else:
        torch_error = _scaled_error(ref64, np.asarray(torch32), scale)
        allowed = min(multiple * max(torch_error, ERROR_FLOOR), MAX_ERROR)
    error = _scaled_error(ref64, actual, scale)
    ok = error <= allowed
    agreement = None
    if top1 and np.isfinite(error):
        agreement = _top1(ref64, actual, allowed * scale)
        ok = ok and agreement.pop("ok")
    return ReferenceParity(name, batch, label, True, scale, error, torch_error, allowed,
                           error * scale, bool(ok), agreement)


def reference_summary(results: list[ReferenceParity], multiple: float, reference: str) -> dict:
    """The record kept in the report: the rule, the worst output, every output's figures and
    one line each (``lines``)."""
    judged = [r for r in results if r.shape_ok and r.allowed > 0]
    worst = max(judged, key=lambda r: r.error / r.allowed, default=None)
    return {
        "ok": all(r.ok for r in results),
        "rule": {"reference": reference, "multiple": multiple, "floor": ERROR_FLOOR,
                 "ceiling": MAX_ERROR,
                 "normalised_by": "the reference output's root mean square",
                 "top1": "logits: the same top-1 token wherever the reference's lead exceeds "
                         "twice the allowed error"},
        "worst": None if worst is None else {"name": worst.name, "label": worst.label,
                                             "error": worst.error, "allowed": worst.allowed},
        "max_abs": max((r.max_abs for r in results), default=0.0),
        "outputs": [r.to_dict() for r in results],
        "lines": [r.line() for r in results],
    }


def check_parity_multiple(name: str, value) -> None:
    """A parity multiple is a positive, finite number (``ValueError`` naming ``name``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0 < float(value) < float("inf"):
        raise ValueError(f"{name} must be a positive finite number (ONNX Runtime's error may "
                         f"be this many times torch's float32 error; default "
                         f"{PARITY_MULTIPLE:g}), got {value!r}")


def failing_lines(summary: dict) -> list[str]:
    """The lines of the outputs that failed (every one, not only the first)."""
    return [line for line in summary["lines"] if line.lstrip().startswith("\u2717")]


def parity_failure(summary: dict, what: str = "ONNX outputs") -> ParityError:
    """One :class:`ParityError` naming every failing output with its figures."""
    failing = failing_lines(summary) or summary["lines"]
    rule = summary["rule"]
    return ParityError(f"{what} differ from torch beyond the derived tolerance ({rule['multiple']:g}"
                       f"x torch's own float32 error against a float64 run, normalised by "
                       f"each output's scale):\n" + "\n".join(failing))


def float64_twin(model):
    """A float64 copy of ``model`` (a torch module), or ``(None, why)`` when it cannot be
    made; ``(twin, "")`` otherwise. The caller's model is not changed."""
    import torch

    try:
        twin = copy.deepcopy(model).to(dtype=torch.float64).eval()
    except Exception as exc:  # noqa: BLE001 - the reason is recorded, float32 is the reference
        return None, f"the model cannot be copied to float64 ({type(exc).__name__}: {exc})"
    return twin, ""


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
