"""The user's code that a recipe or ``--model`` names: what may be imported, and how.

A recipe names code to run (``module:function`` builders, providers, stage modules). Each is
refused by name before it is imported when it is a loader of pickled data (unless
``--trust-pickle``) or comes from the standard library or a module that runs commands or
touches files (unless ``--allow-any-builder``); it is then imported from the recipe's folder
first and run with unpickling refused (:mod:`edgepack.core.pickle_guard`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from edgepack.core.checks import did_you_mean
from edgepack.core.pickle_guard import no_unpickling, refuse_pickle_loader


def resolver(base_dir: Path | None, what: str = "builder"):
    """``resolve("module:function")`` with the recipe's import rules (its folder first)."""
    return lambda spec: import_object(spec, base_dir, what=what)


# Modules that run commands, touch files or reach into the interpreter: never model or data
# code. The standard library as a whole is refused too (sys.stdlib_module_names).
DENIED_MODULES = ("os", "subprocess", "builtins", "shutil", "sys", "importlib", "runpy",
                  "pty", "socket", "ctypes", "multiprocessing", "pickle", "code", "codeop",
                  "webbrowser", "posix", "nt", "signal", "tempfile", "pathlib", "io",
                  "torch.hub", "setuptools", "pip", "IPython")


@dataclass
class CodeTrust:
    """What the user vouched for on the command line, for the code a recipe names.

    ``any_builder`` (``--allow-any-builder``): builders from any module, the standard library
    included. ``pickle`` (``--trust-pickle``): loaders of pickled data, and unpickling inside
    the user's builders and providers (:mod:`edgepack.core.pickle_guard`); without it both are refused,
    whatever ``any_builder`` says.
    """

    any_builder: bool = False
    pickle: bool = False


TRUST = CodeTrust()


def allow_any_builder(on: bool = True) -> None:
    """Let recipes and ``--model`` name builders from any module (the user vouches)."""
    TRUST.any_builder = bool(on)


def trust_pickle(on: bool = True) -> None:
    """Let recipes name loaders of pickled data, and user code unpickle (the user vouches)."""
    TRUST.pickle = bool(on)


@contextlib.contextmanager
def trusting(any_builder: bool = False, pickle: bool = False):
    """What one command vouches for, while it runs; the previous trust comes back after."""
    before = dataclasses.replace(TRUST)
    TRUST.any_builder, TRUST.pickle = bool(any_builder), bool(pickle)
    try:
        yield TRUST
    finally:
        TRUST.any_builder, TRUST.pickle = before.any_builder, before.pickle


def check_builder_module(spec: str, what: str) -> None:
    """Refuse a builder or provider before it is imported when it is a loader of pickled
    data (unless ``--trust-pickle``), or comes from the standard library or a module that is
    not model or data code (unless ``--allow-any-builder``): a recipe names code to run, and
    ``os:system`` is code too."""
    if not TRUST.pickle:
        refuse_pickle_loader(spec, what)
    if TRUST.any_builder:
        return
    module_name = spec.partition(":")[0]
    top = module_name.split(".")[0]
    denied = top in sys.stdlib_module_names or top.startswith("_") or any(
        module_name == d or module_name.startswith(d + ".") for d in DENIED_MODULES)
    if denied:
        raise ValueError(f"{what} {spec!r} comes from {module_name!r}, which is not model or "
                         "data code (the standard library and modules that run commands or "
                         "touch files are refused); point it at your own module, or pass "
                         "--allow-any-builder if you mean it")


def user_code(what: str):
    """The guard the user's builders and providers run under: no unpickling unless
    ``--trust-pickle`` (:func:`edgepack.core.pickle_guard.no_unpickling`)."""
    return no_unpickling(what, trusted=TRUST.pickle)


# Builder modules of earlier releases, and where they are now (named in the error).
MOVED_MODULES = {"edgepack.minilm": "edgepack.zoo.minilm",
                 "edgepack.architectures": "edgepack.zoo.architectures",
                 "edgepack.transformer_models": "edgepack.zoo.transformer_models",
                 "edgepack.text_corpus": "edgepack.zoo.text_corpus",
                 "edgepack.mnist1d_data": "edgepack.zoo.mnist1d_data"}


def import_object(spec: str, base_dir: Path | None = None, what: str = "object"):
    """Import ``module:function``, looking in the recipe's folder first; modules that are
    not model or data code are refused before the import (:func:`check_builder_module`)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {spec!r} must look like 'module:function'")
    check_builder_module(spec, what)
    added = False
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
        added = True
    try:
        with user_code(f"{what} {spec!r}"):
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and not module_name.startswith(exc.name):
            raise  # the module is there; a package it imports is not (edgepack.core.errors says so)
        moved = next((new for old, new in MOVED_MODULES.items()
                      if module_name == old or module_name.startswith(old + ".")), None)
        hint = f"; it moved to {moved!r}" if moved else ""
        where = f"{base_dir} and the Python path" if base_dir else "the Python path"
        raise ValueError(f"{what} {spec!r}: module {module_name!r} not found (looked in "
                         f"{where}){hint}") from exc
    finally:
        if added:
            sys.path.remove(str(base_dir))
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise ValueError(f"{what} {spec!r}: module {module_name!r} has no {attr!r}"
                         f"{did_you_mean(attr, names)}") from exc
