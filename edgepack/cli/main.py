"""``edgepack`` entry point: parse, dispatch, and turn errors into one line and an exit code.

Exit codes (:mod:`edgepack.core.errors`): 0 success; 1 a stage ran and failed its own check (parity,
NaN outputs, a quantized model not accurate or not faster); 2 bad input (one line on stderr,
no traceback; ``--debug`` shows it); 3 a bug in edgepack (``--debug`` for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback

COMMANDS = ("demo", "run", "export", "package", "quantize", "bench", "generate", "verify", "env")
RESUMABLE = ("demo", "run")
ISSUE_HINT = ("please report it with the output of `edgepack env` and the command you ran")


def build_parser() -> argparse.ArgumentParser:
    from edgepack import __version__

    parser = argparse.ArgumentParser(
        prog="edgepack",
        description="Distill, prune, export to ONNX, quantize and benchmark PyTorch models.")
    parser.add_argument("--version", action="version", version=f"edgepack {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"edgepack.cli.{name}_cmd")
        module.register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:  # "[Errno 2] ..." reads as a code, not words
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command. Ctrl-C at any point, the imports of the subcommands included, is
    one line and exit code 130 (files being written are left as they were: edgepack.core.files)."""
    command = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        if not command:
            parser.print_help()
            return 2
        try:
            return int(args.handler(args) or 0)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            return _report(exc, args.debug)
    except KeyboardInterrupt:
        return _interrupted(command)


def _interrupted(command: str | None) -> int:
    """One line for Ctrl-C; a second Ctrl-C while it is printed is ignored."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to set
        previous = None
    hint = "; run again with --resume to continue" if command in RESUMABLE else ""
    print(f"edgepack: interrupted{hint}", file=sys.stderr)
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
    return 130


def _report(exc: Exception, debug: bool) -> int:
    """Print what went wrong the way its kind asks for; return the exit code."""
    from edgepack.core.errors import (EXIT_BAD_INPUT, EXIT_BUG, exit_code_for, missing_package,
                                      missing_package_message)

    if debug:
        traceback.print_exc()
    code = exit_code_for(exc)
    if code == EXIT_BUG:
        print(f"edgepack: internal error (a bug): {type(exc).__name__}: {_one_line(exc)}; "
              f"run with --debug for the traceback, and {ISSUE_HINT}", file=sys.stderr)
    elif code == EXIT_BAD_INPUT:
        line = missing_package_message(exc) if missing_package(exc) else _one_line(exc)
        print(f"edgepack: error: {line}", file=sys.stderr)
    else:
        print(f"edgepack: {exc}", file=sys.stderr)  # check failures: every line counts
    return code


if __name__ == "__main__":
    sys.exit(main())
