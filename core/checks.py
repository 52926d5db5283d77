"""Config checks shared by every stage and recipe table: errors that teach.

Each check raises a ``ValueError`` naming the field, the bad value and what was expected,
with a "did you mean" for a near miss, so a typo in a recipe or a flag is one clear line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Iterable


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(owner: str, name: str, value: Any, choices: Iterable[str]) -> None:
    """Raise a ValueError naming the field, the bad value and the valid choices."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"{owner}.{name}={value!r} is not valid; expected one of {listed}"
            f"{did_you_mean(value, choices)}"
        )


def check_range(owner: str, name: str, value: float, low: float, high: float,
                high_inclusive: bool = False) -> None:
    """Raise a ValueError unless ``low <= value < high`` (or ``<= high``)."""
    ok = low <= value <= high if high_inclusive else low <= value < high
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{owner}.{name}={value!r} is outside [{low}, {high}{bracket}")


def _label(owner: str, name: str) -> str:
    """``owner.name``; ``[table] name`` for a recipe table; the bare name for a flag."""
    if not owner:
        return name
    return f"{owner} {name}" if owner.endswith("]") else f"{owner}.{name}"


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (not a bool) that is neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def check_number(owner: str, name: str, value: Any, low: float | None = None,
                 high: float | None = None, *, low_inclusive: bool = True,
                 high_inclusive: bool = True) -> None:
    """Refuse a setting that is not a finite number, or lies outside ``[low, high]``.

    NaN compares false with everything, so a NaN threshold silently passes (or fails) every
    check it guards, and an infinite budget never ends: both are refused by name.
    ``owner`` may be empty when ``name`` is a flag (``--atol``).
    """
    where = _label(owner, name)
    if not is_finite_number(value):
        raise ValueError(f"{where}={value!r} is not a finite number; expected "
                         f"{_expected(low, high, low_inclusive, high_inclusive)}")
    below = low is not None and (value < low if low_inclusive else value <= low)
    above = high is not None and (value > high if high_inclusive else value >= high)
    if below or above:
        raise ValueError(f"{where}={value!r} is out of range; expected "
                         f"{_expected(low, high, low_inclusive, high_inclusive)}")


def _expected(low, high, low_inclusive: bool, high_inclusive: bool) -> str:
    if low is not None and high is not None:
        return (f"a number in {'[' if low_inclusive else '('}{low}, {high}"
                f"{']' if high_inclusive else ')'}")
    if low is not None:
        return f"a number {'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        return f"a number {'<=' if high_inclusive else '<'} {high}"
    return "a finite number"


def is_float_annotation(annotation: Any) -> bool:
    """Whether a field annotation is ``float``, ``float | None`` or a list/tuple of floats."""
    if annotation is float:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple, list):
        return any(is_float_annotation(a) for a in typing.get_args(annotation))
    return False


def check_finite_fields(config: Any, owner: str) -> None:
    """Refuse NaN and infinities in every float field of the dataclass ``config`` (lists of
    floats included): the one check each config's ``__post_init__`` runs first."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        if is_float_annotation(hints.get(f.name)):
            check_finite_value(owner, f.name, getattr(config, f.name))


def check_finite_value(owner: str, name: str, value: Any) -> None:
    """Refuse a float (or a float inside a list or tuple) that is NaN or infinite."""
    values = value if isinstance(value, (list, tuple)) else [value]
    for item in values:
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{_label(owner, name)}={value!r} is not a finite number; NaN "
                             "and infinities are refused")


# Budgets no run on one machine could finish: refused with the bound, not started.
MAX_EPOCHS = 10_000
MAX_STEPS = 10_000          # attack or defence steps per input
MAX_GENERATED_SAMPLES = 2_000_000   # samples a provider or stage generates
MAX_TOKENS = 131_072        # tokens a prompt and its continuation may hold (a 128k context)
MAX_ROUNDS = 1_000          # timed rounds of a benchmark
MAX_RUNS = 1_000_000        # timed or warm-up runs of one model
MAX_RESAMPLES = 10_000      # bootstrap resamples of a confidence interval
MAX_SECONDS = 3_600.0       # timed seconds per model


BUDGETS = {"epochs": MAX_EPOCHS, "steps": MAX_STEPS, "samples": MAX_GENERATED_SAMPLES,
           "tokens": MAX_TOKENS, "rounds": MAX_ROUNDS, "runs": MAX_RUNS,
           "resamples": MAX_RESAMPLES}


def check_budget(owner: str, name: str, value: int, unit: str) -> None:
    """Refuse a count below 0 or above the bound for ``unit`` (:data:`BUDGETS`):
    ``epochs = 10**12`` would never finish. ``owner`` may be empty for a flag."""
    bound, where = BUDGETS[unit], _label(owner, name)
    if value < 0:
        raise ValueError(f"{where} must be >= 0, got {value}")
    if value > bound:
        raise ValueError(f"{where}={value:,} is beyond the bound of {bound:,} {unit}: "
                         "a run that size would not finish on one machine; lower it")


def value_fits(value: Any, annotation: Any) -> bool:
    """Whether a plain (TOML/JSON) value fits a dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(value_fits(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(
            value_fits(v, args[0]) for v in value) if args else isinstance(value, (list, tuple))
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True


def type_label(annotation: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             dict: "a table"}
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_label(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "nothing"
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "a table"
    return str(annotation)


def checked_fields(cls, data: dict, owner: str) -> dict:
    """Keyword arguments for dataclass ``cls`` from plain data, every key and type checked.

    Unknown keys get a "did you mean"; a value of the wrong type names the expected one; NaN
    or an infinity for a float field is refused (TOML writes them ``nan`` and ``inf``); lists
    become tuples and integers given for float fields become floats.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ValueError(f"{owner}: unknown key {key!r}{did_you_mean(key, names)}; "
                             f"valid keys: {', '.join(names)}")
        if not value_fits(value, hints[key]):
            raise ValueError(f"{owner}.{key} must be {type_label(hints[key])}, got {value!r}")
        if is_float_annotation(hints[key]):
            check_finite_value(owner, key, value)
        if isinstance(value, list):
            value = tuple(value)
        if hints[key] is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return kwargs
