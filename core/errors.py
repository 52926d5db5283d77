"""The three kinds of failure, and the exit code each one means.

- :class:`BadInput` (exit 2): the user asked for something that cannot work — a missing
  file, a bad value, a model that does not fit the data. One line names what is wrong and
  what was expected. ``ValueError`` and ``OSError`` raised by validation count as bad input,
  and so does a package the user's code imports that is not installed.
- :class:`CheckFailed` (exit 1): a stage ran and its own check refused the result (export
  parity, NaN outputs, a quantized model that is not accurate or not faster). The message
  carries the figures.
- anything else is a bug (exit 3): the command line says so, with ``--debug`` for the
  traceback and where to report it. A bug is never dressed as bad input.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BUG = 3


class BadInput(ValueError):
    """Input the user can fix: exit code 2, one line."""

    exit_code = EXIT_BAD_INPUT


class CheckFailed(RuntimeError):
    """A stage ran and failed its own check: exit code 1, with the figures."""

    exit_code = EXIT_CHECK_FAILED


class MissingDependency(BadInput):
    """An optional package is missing or broken: names it and how to install it."""

    def __init__(self, package: str, extra: str, cause: BaseException | str):
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        super().__init__(f"could not import {package} ({detail}); install it with "
                         f"pip install 'edgepack[{extra}]' (or fix the broken install)")


PROJECT_PACKAGES = ("edgepack",)   # every layer is installed under this one name


def missing_package(exc: BaseException) -> str | None:
    """The package a ``ModuleNotFoundError`` says is not installed, when it is not one of
    edgepack's own (a module of ours missing is a broken install: a bug, not the user's)."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if top not in PROJECT_PACKAGES:
            return top
    return None


def missing_package_message(exc: BaseException) -> str:
    """One line for a package the run needs that is not installed (a model or data
    function's own import, say)."""
    package = missing_package(exc)
    return (f"the Python package {package!r} is not installed, and the run needs it "
            f"({exc}); install it into this environment (pip install {package}, or the "
            f"distribution that provides it)")


def exit_code_for(exc: BaseException) -> int:
    """The exit code an exception means (see the module docstring)."""
    code = getattr(exc, "exit_code", None)
    if code is not None:
        return int(code)
    if isinstance(exc, (ValueError, OSError)) or missing_package(exc):
        return EXIT_BAD_INPUT
    return EXIT_BUG
