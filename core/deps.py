"""Optional packages: import them, and when that fails say which package broke and how to fix
it, as bad input (exit 2) rather than an internal error; and keep their chatter (progress
prints, notes, warnings) out of edgepack's output while they work (:func:`quiet_library`).

An optional package often fails to import because of *another* package it pulls in: optimum
imports transformers, which imports torchvision when it is installed, and a torchvision
built for another torch fails with "operator torchvision::nms does not exist" -- reported by
transformers' lazy importer as "Could not import module 'main_export'". The package to fix
is the one whose code raised, found in the traceback of the innermost error.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import re
import warnings

from edgepack.core.errors import BadInput

_SITE_PACKAGE = re.compile(r"[/\\](?:site|dist)-packages[/\\]([A-Za-z0-9_]+)")


class BrokenDependency(BadInput):
    """An optional package is missing or fails to import (exit code 2)."""


def _innermost(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def failing_package(exc: BaseException, default: str) -> str:
    """The top-level package whose import failed: a missing module's name, else the
    innermost installed package in the failing traceback, else ``default``."""
    root = _innermost(exc)
    if isinstance(root, ImportError) and root.name:
        return root.name.split(".")[0]
    tb, found = root.__traceback__, None
    while tb is not None:
        match = _SITE_PACKAGE.search(tb.tb_frame.f_code.co_filename)
        if match and not match.group(1).startswith("_"):
            found = match.group(1)
        tb = tb.tb_next
    return found or default


def import_optional(module: str, attribute: str | None, package: str, extra: str):
    """``module`` (or ``module.attribute``); a failure is one line naming what to fix."""
    try:
        loaded = importlib.import_module(module)
        return getattr(loaded, attribute) if attribute else loaded
    except Exception as exc:  # lazy importers raise RuntimeError, broken builds anything
        culprit = failing_package(exc, package)
        root = _innermost(exc)
        detail = (str(root).strip().splitlines() or [type(root).__name__])[0][:200]
        if culprit == package:
            fix = f"install it with pip install 'edgepack[{extra}]'"
        else:
            fix = (f"{culprit} is broken or built for another version: reinstall it to match, "
                   f"or uninstall it (pip uninstall {culprit}) if nothing needs it")
        raise BrokenDependency(f"could not import {package}: {culprit} failed to import "
                               f"({type(root).__name__}: {detail}); {fix}") from exc


@contextlib.contextmanager
def quiet_library(logger_name: str, stderr: bool = False):
    """While a library works: its logger at ERROR, its prints to stdout (and, with
    ``stderr``, to stderr) and its warnings dropped. Its result is judged afterwards (the
    parity check, the quality gate), not its notes."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            if stderr:
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
