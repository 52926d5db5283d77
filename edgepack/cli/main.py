"""``edgepack`` entry point: parse, dispatch, and turn errors into one line and an exit code.

Exit codes: 0 success; 1 a stage ran and failed its own check (parity, NaN outputs);
2 bad input (one line on stderr, no traceback; ``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

COMMANDS = ("demo", "run", "export", "package", "quantize", "bench", "env")
# Bad input, and files or folders that cannot be read or written (a full disk included):
# one line naming the path, exit code 2.
BAD_INPUT = (ValueError, OSError, KeyError)


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
    text = str(exc).strip()
    if isinstance(exc, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("edgepack: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        if args.debug:
            traceback.print_exc()
        code = getattr(exc, "exit_code", None)
        if code is not None:
            print(f"edgepack: {exc}", file=sys.stderr)  # check failures: every line counts
            return int(code)
        if isinstance(exc, BAD_INPUT):
            print(f"edgepack: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        print(f"edgepack: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
