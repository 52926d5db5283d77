"""Config checks shared by every stage and recipe table: errors that teach.

Each check raises a ``ValueError`` naming the field, the bad value and what was expected,
with a "did you mean" for a near miss, so a typo in a recipe or a flag is one clear line.
"""

from __future__ import annotations

import dataclasses
import difflib
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


# Budgets no run on one machine could finish: refused with the bound, not started.
MAX_EPOCHS = 10_000
MAX_STEPS = 10_000          # attack or defence steps per input
MAX_GENERATED_SAMPLES = 2_000_000   # samples a provider or stage generates


BUDGETS = {"epochs": MAX_EPOCHS, "steps": MAX_STEPS, "samples": MAX_GENERATED_SAMPLES}


def check_budget(owner: str, name: str, value: int, unit: str) -> None:
    """Refuse a count below 0 or above the bound for ``unit`` (:data:`BUDGETS`):
    ``epochs = 10**12`` would never finish."""
    bound = BUDGETS[unit]
    if value < 0:
        raise ValueError(f"{owner}.{name} must be >= 0, got {value}")
    if value > bound:
        raise ValueError(f"{owner}.{name}={value:,} is beyond the bound of {bound:,} {unit}: "
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

    Unknown keys get a "did you mean"; a value of the wrong type names the expected one;
    lists become tuples and integers given for float fields become floats.
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
        if isinstance(value, list):
            value = tuple(value)
        if hints[key] is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return kwargs
