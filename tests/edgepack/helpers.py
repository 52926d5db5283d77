"""Helpers for command-line tests: run ``edgepack`` in this process, read its one error line."""

from __future__ import annotations

from edgepack.cli.main import main


def run_cli(capsys, *argv) -> tuple[int, str]:
    """Exit code and stderr of ``edgepack *argv``; a traceback fails the test."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def error_line(err: str) -> str:
    """The one ``edgepack: error:`` line (exactly one, or the test fails)."""
    lines = [ln for ln in err.splitlines() if ln.startswith("edgepack: error:")]
    assert len(lines) == 1, err
    return lines[0]


def run_cli_output(capsys, *argv) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``edgepack *argv``; a traceback fails the test."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err

