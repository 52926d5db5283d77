"""Command-line flags made from a config dataclass's own fields, so no setting is retyped.

Each field declared with :func:`edgepack.core.stage.option` becomes ``--field-name`` with the field's
help text and default; booleans get ``--x`` (off by default) or ``--x/--no-x``. A flag the user did not give is left out
of the keyword arguments, so the config's own default (or its preset) decides.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

_SIMPLE = {int: int, float: float, str: str}


def _scalar_type(annotation):
    """The argparse type for a field annotation (``X | None`` counts as ``X``); None if the
    field cannot be a flag (lists, tables)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    if annotation is bool:
        return bool
    return _SIMPLE.get(annotation)


def flag_fields(cls, skip=()) -> list[tuple[dataclasses.Field, type]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = _scalar_type(hints[f.name])
        if f.name in skip or kind is None or not f.metadata.get("flag", True):
            continue
        out.append((f, kind))
    return out


def _default_text(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING or f.default is None or f.default == "" or \
            isinstance(f.default, bool) and not f.default:
        return ""
    return f" (default {f.default})"


def add_config_flags(parser: argparse.ArgumentParser, cls, skip=(), renames=None,
                     notes=None) -> None:
    """Add one flag per field of ``cls`` (``renames`` maps a field to another flag name;
    ``notes`` adds a word to a field's help, such as the methods that read it)."""
    renames, notes = renames or {}, notes or {}
    for f, kind in flag_fields(cls, skip):
        name = "--" + renames.get(f.name, f.name.replace("_", "-"))
        help_text = f.metadata.get("help", "") + notes.get(f.name, "")
        choices = f.metadata.get("choices") or ()
        if choices:
            help_text += f": {' | '.join(c for c in choices if c)}"
        help_text = (help_text + _default_text(f)).replace("%", "%%")  # argparse formats help
        if kind is bool and f.default is False:   # an opt-in switch: --flag
            parser.add_argument(name, dest=f.name, action="store_const", const=True,
                                default=None, help=help_text)
        elif kind is bool:                          # on by default or unset: --flag/--no-flag
            parser.add_argument(name, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(name, dest=f.name, type=kind, default=None, help=help_text,
                                metavar=f.name.upper())


def config_kwargs(args: argparse.Namespace, cls, skip=(), renames=None) -> dict:
    """The fields the user set on the command line (others keep the config's default).

    A number flag given NaN or an infinity (argparse's ``float`` reads ``nan`` and ``inf``)
    is refused here, naming the flag (``renames`` as given to :func:`add_config_flags`).
    """
    from edgepack.core.checks import check_finite_value

    given = {}
    for f, kind in flag_fields(cls, skip):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if kind is float:
            check_finite_value("", "--" + (renames or {}).get(f.name, f.name.replace("_", "-")),
                               value)
        given[f.name] = value
    return given
