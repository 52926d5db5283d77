"""Fuzzing the command line: random argument lists over random and corrupted files.

Whatever it is given, edgepack must answer with exit code 0, 1 or 2 (never 3, a bug), no
traceback, and, when it fails, nothing at the output path it was asked to write; an output
path that already holds a user's file keeps that file whatever happens. Inputs include the
bad models of :mod:`tests.edgepack.bad_models` (no inputs or outputs, duplicate node names,
NaN weights, shapes too big for memory) and an already quantized model. Only the fast
commands are fuzzed (bench with one timed run, dynamic quantization, package, verify), with a
small ``max_examples`` so the suite stays quick.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepack.cli.main import main
from tests.bench.conftest import matmul_add
from tests.edgepack.bad_models import BAD_MODEL_KINDS, bad_model

FILE_KINDS = ("model", "truncated", "flipped", "random", "empty", "npz", "bad_npz", "missing",
              "folder", "quantized", *BAD_MODEL_KINDS)
OUTPUT_KINDS = ("new", "user file", "wrong suffix", "the input")


def make_file(folder: Path, kind: str, data: bytes, role: str) -> Path:
    """A file of the given kind (``data`` drives the random and corrupted ones)."""
    suffix = ".npz" if kind in ("npz", "bad_npz") else ".onnx"
    path = folder / f"{role}-{kind}{suffix}"
    good = matmul_add(folder / "good.onnx").read_bytes()
    if kind == "model":
        path.write_bytes(good)
    elif kind == "truncated":
        path.write_bytes(good[:max(1, len(data) % len(good))])
    elif kind == "flipped":
        raw = bytearray(good)
        for i, byte in enumerate(data[:16]):
            raw[(i * 37 + byte) % len(raw)] ^= byte or 1
        path.write_bytes(bytes(raw))
    elif kind == "random":
        path.write_bytes(data or b"\x00")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npz":
        rows = 1 + len(data) % 5
        np.savez(path, x=np.ones((rows, 16), np.float32),
                 labels=np.full(rows, len(data) % 12, np.int64))
    elif kind == "bad_npz":
        path.write_bytes(b"PK\x03\x04" + data)
    elif kind == "folder":
        path.mkdir()
    elif kind == "quantized":
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(["quantize", str(folder / "good.onnx"), "-o", str(path), "--mode", "dynamic",
                  "--allow-slower", "--no-speed-check"])
    elif kind in BAD_MODEL_KINDS:
        (folder / kind).mkdir(exist_ok=True)
        bad_model(folder / kind, kind).rename(path)
    return path


def snapshot(path: Path):
    """What a user's file or folder holds, to show it was not touched."""
    if path.is_dir():
        return sorted((p.name, p.read_bytes() if p.is_file() else None) for p in path.iterdir())
    return path.read_bytes()


def output_path(folder: Path, kind: str, suffix: str, model: Path) -> Path:
    """Where the command is asked to write: new, over a user's file, a wrong suffix, or the
    command's own input."""
    if kind == "the input":
        return model
    path = folder / "out" / ("notes.txt" if kind == "wrong suffix" else f"r{suffix}")
    if kind in ("user file", "wrong suffix"):
        path.parent.mkdir(exist_ok=True)
        path.write_text("the user's file")
    return path


NUMBERS = st.sampled_from(["0", "1", "-1", "3", "1000000000000", "nan", "x", "", "1e9"])
FLAGS = {
    "bench": st.lists(st.sampled_from(["--batch", "--threads", "--shape", "--provider",
                                       "--profile", "--graph-optimization"]), max_size=3),
    "quantize": st.lists(st.sampled_from(["--mode", "--calibration-samples", "--preset",
                                          "--format", "--block-size"]), max_size=3),
}
FIXED = {"bench": ["--min-runs", "1", "--min-time", "0", "--warmup", "0"],
         "quantize": ["--mode", "dynamic"], "package": [], "verify": []}
OUTPUT_FLAG = {"bench": ("--json", ".json"), "quantize": ("-o", ".onnx"), "package": ("-o", "")}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(("bench", "quantize", "package", "verify")))
    model_kind = draw(st.sampled_from(FILE_KINDS))
    data_kind = draw(st.none() | st.sampled_from(FILE_KINDS))
    out_kind = draw(st.sampled_from(OUTPUT_KINDS))
    blob = draw(st.binary(min_size=0, max_size=64))
    extra = []
    for flag in draw(FLAGS.get(command, st.just([]))):
        extra += [flag, draw(NUMBERS | st.sampled_from(["x=1,2", "cpu", "cuda", "int4",
                                                        "static", "edge", "all"]))]
    return command, model_kind, data_kind, out_kind, blob, extra


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(command_lines())
def test_random_command_lines_fail_cleanly(case):
    command, model_kind, data_kind, out_kind, blob, extra = case
    folder = Path(tempfile.mkdtemp(prefix="edgepack-fuzz-"))
    try:
        model = make_file(folder, model_kind, blob, "model")
        argv = [command, str(model if command != "verify" else model.parent)]
        if data_kind is not None and command in ("bench", "quantize"):
            argv += ["--data", str(make_file(folder, data_kind, blob[::-1], "data"))]
        out = None
        if command in OUTPUT_FLAG:
            flag, suffix = OUTPUT_FLAG[command]
            out = output_path(folder, out_kind, suffix, model)
            argv += [flag, str(out)]
        before = snapshot(out) if out is not None and out.exists() else None
        argv += FIXED[command] + extra
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse refuses a malformed command line
                code = exc.code
        text = err.getvalue()
        assert code in (0, 1, 2), f"{argv}: exit {code}: {text[-800:]}"
        assert "Traceback" not in text and "internal error" not in text, f"{argv}: {text}"
        if before is not None:   # a user's file, or the input: never touched
            assert snapshot(out) == before, f"{argv} wrote over {out}"
        elif code != 0 and out is not None:
            assert not out.exists(), f"{argv} failed (exit {code}) but wrote {out}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
