"""Registries of named choices, one level below the stages: quantize methods, attacks,
student initialisations.

Each choice lives in one file of its family's package and registers a spec there (a frozen
dataclass with at least ``name`` and ``settings``: the small dataclass of the choice's own
fields, or None). The registry imports every module of that package the first time it is
asked, so adding a choice is adding a file: nothing else lists it. An unknown name is an
error naming the registered ones (and the close one); nothing falls through to a default.

A config that picks a choice carries that choice's settings beside its own fields; recipes
and command lines write both flat (``mode = "static"`` next to ``calibration = "entropy"``).
:func:`split_settings` sorts flat keys into the two, naming the choice a stray key belongs to.

Example::

    METHODS = Registry("quantize method", "edgepack.compress.quantize.methods")

    @dataclass(frozen=True)
    class MethodSpec:
        name: str
        settings: type | None
        quantize: Callable

    METHODS.register(MethodSpec("int2", Int2Settings, quantize_int2))
    METHODS.get("int2").quantize(...)       # METHODS.get("int3") names int2 and the others
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Generic, TypeVar

from edgepack.core.checks import checked_fields, did_you_mean

Spec = TypeVar("Spec")


class Registry(Generic[Spec]):
    """The registered choices of one family, found in the modules of ``package``."""

    def __init__(self, family: str, package: str):
        self.family, self.package = family, package
        self._specs: dict[str, Spec] = {}
        self._discovered = False

    def register(self, spec: Spec) -> Spec:
        """Add a choice (called at the end of the module that defines it)."""
        name = getattr(spec, "name")
        existing = self._specs.get(name)
        if existing is not None and existing is not spec:
            raise ValueError(f"{self.family} {name!r} is registered twice")
        self._specs[name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove a choice (for tests that register one of their own)."""
        self._specs.pop(name, None)

    def refresh(self) -> None:
        """Look for modules again on the next lookup (after a file was added to the package)."""
        self._discovered = False

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")

    def names(self) -> tuple[str, ...]:
        """Every registered name, in the order the specs' ``order`` gives (then by name)."""
        self._discover()
        return tuple(sorted(self._specs, key=lambda n: (getattr(self._specs[n], "order", 0), n)))

    def get(self, name: str, owner: str = "") -> Spec:
        """The spec registered as ``name``; an unknown name lists the known ones."""
        self._discover()
        if name not in self._specs:
            known = self.names()
            where = f"{owner}: " if owner else ""
            raise ValueError(f"{where}unknown {self.family} {name!r}"
                             f"{did_you_mean(str(name), known)}; expected one of "
                             f"{', '.join(known)}")
        return self._specs[name]

    def specs(self) -> list[Spec]:
        return [self._specs[name] for name in self.names()]


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if cls is not None else []


def split_settings(data: dict, own: list[str], choice: str, registry: Registry,
                   owner: str) -> tuple[dict, Any]:
    """Flat keys -> (the config's own keys, the chosen spec's settings object or None).

    A key that is neither the config's nor the choice's is refused: naming the other choices
    it belongs to, or with a "did you mean" over every valid key.
    """
    spec = registry.get(choice, owner)
    settings_cls = getattr(spec, "settings", None)
    theirs = field_names(settings_cls)
    mine = {k: v for k, v in data.items() if k in own}
    rest = {k: v for k, v in data.items() if k not in own}
    for key in rest:
        if key in theirs:
            continue
        elsewhere = [s.name for s in registry.specs() if key in field_names(s.settings)]
        if elsewhere:
            raise ValueError(f"{owner}: {key!r} is a setting of {registry.family} "
                             f"{' and '.join(repr(e) for e in elsewhere)}, not of {choice!r}; "
                             f"{choice!r} takes {', '.join(theirs) or 'no settings of its own'}")
        valid = own + theirs
        raise ValueError(f"{owner}: unknown key {key!r}{did_you_mean(key, valid)}; valid keys: "
                         f"{', '.join(valid)}")
    settings = settings_cls(**checked_fields(settings_cls, rest, owner)) \
        if settings_cls is not None else None
    return mine, settings


def settings_dict(settings) -> dict:
    """A choice's settings as plain values (tuples become lists); {} for None."""
    if settings is None:
        return {}
    return {f.name: list(v) if isinstance(v := getattr(settings, f.name), tuple) else v
            for f in dataclasses.fields(settings)}
