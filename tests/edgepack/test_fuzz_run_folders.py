"""Fuzzing run folders and packages: tampered manifests, swapped and special files, resumes
with changed inputs, and a held lock.

- ``verify`` on a run folder or a package with random files changed, removed, added, swapped
  for a symlink to an identical copy, for a FIFO, a socket or a huge sparse file, or with its
  manifest tampered with: exit 0 only when untouched, every tampered file named with its kind
  (exit 1), a bad manifest one ``edgepack: error:`` line (exit 2); never a hang, a traceback or
  a change to the folder.
- ``run --resume`` into a run whose record of inputs differs from the recipe by one random
  key, a named file's size or hash, or whose record is damaged or special, or whose folder
  another process holds: exit 2, one line naming the key, the file, the record or the pid,
  before the teacher is prepared, with nothing written.

Small ``max_examples``: each family runs in seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepack.cli.main import main
from edgepack.pipeline.run_inputs import INPUTS_FILE, _flat, recipe_inputs
from edgepack.pipeline.run_lock import LOCK_FILE
from tests.edgepack.test_verify import snapshot

FILES = {"01-export/model.onnx": b"onnx model bytes", "02-quantize/model.onnx": b"int8 model",
         "report.json": b'{"stages": []}', "recipe.toml": b'name = "x"\n'}
FILE_OPS = ("flip", "append", "truncate", "delete", "symlink", "fifo", "socket", "sparse")
EXTRA_OPS = ("extra", "extra-link", "extra-fifo")
MANIFEST_OPS = ("fifo", "symlink", "folder", "not json", "a list", "no marker", "escape",
                "absolute", "bad digest", "bad size")
EXPECTED_KIND = {"flip": "changed", "append": "changed", "truncate": "changed",
                 "delete": "missing", "symlink": "symlink", "fifo": "special",
                 "socket": "special", "sparse": "changed", "extra": "extra",
                 "extra-link": "symlink", "extra-fifo": "special"}
SETTINGS = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def cli(*argv) -> tuple[int, list[str], str]:
    """Exit code, stdout lines and stderr of ``edgepack *argv`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    assert "Traceback" not in err.getvalue() and "internal error" not in err.getvalue(), \
        err.getvalue()
    return code, out.getvalue().splitlines(), err.getvalue()


def one_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("edgepack: error:")]
    assert len(lines) == 1, err
    return lines[0]


def make_folder(root: Path, package: bool) -> Path:
    """A run folder (written by the pipeline's manifest writer) or a package (its manifest
    as export/package.py writes it) holding :data:`FILES`."""
    import hashlib

    folder = root / ("pkg" if package else "run")
    for name, data in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    if package:
        files = {n: {"sha256": hashlib.sha256(d).hexdigest(), "size_bytes": len(d)}
                 for n, d in FILES.items()}
        (folder / "manifest.json").write_text(json.dumps(
            {"edgepack_package": True, "format": "ort", "files": files}))
    else:
        from edgepack.pipeline.run_report import write_manifest

        write_manifest(folder)
    return folder


def tamper_file(folder: Path, name: str, op: str, outside: Path) -> None:
    path = folder / name
    if op in ("flip", "append", "truncate"):
        data = path.read_bytes()
        path.write_bytes({"flip": bytes([data[0] ^ 1]) + data[1:], "append": data + b"!",
                          "truncate": data[:-1]}[op])
        return
    if op == "sparse":
        with open(path, "r+b") as handle:
            handle.truncate(64 << 30)
        return
    copy = outside / name.replace("/", "_")
    shutil.copyfile(path, copy)
    path.unlink()
    if op == "symlink":
        path.symlink_to(copy)
    elif op == "fifo":
        os.mkfifo(path)
    elif op == "socket":
        os.mknod(path, stat.S_IFSOCK | 0o600)


def add_extra(folder: Path, op: str, index: int) -> str:
    name = f"extra-{index}.bin"
    if op == "extra":
        (folder / name).write_bytes(b"?")
    elif op == "extra-link":
        (folder / name).symlink_to("/etc/hostname")
    else:
        os.mkfifo(folder / name)
    return name


def tamper_manifest(folder: Path, op: str) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    first = next(iter(manifest["files"]))
    if op in ("fifo", "symlink", "folder"):
        shutil.copyfile(path, folder.parent / "manifest-copy.json")
        path.unlink()
        {"fifo": os.mkfifo, "folder": os.mkdir,
         "symlink": lambda p: p.symlink_to(folder.parent / "manifest-copy.json")}[op](path)
        return
    if op == "not json":
        path.write_bytes(b"\xff{" + path.read_bytes()[:10])
        return
    if op == "a list":
        manifest = [manifest]
    elif op == "no marker":
        manifest.pop("edgepack_run", None)
        manifest.pop("edgepack_package", None)
    elif op in ("escape", "absolute"):
        manifest["files"]["../outside" if op == "escape" else "/etc/hostname"] = \
            manifest["files"][first]
    elif op == "bad digest":
        entry = manifest["files"][first]
        manifest["files"][first] = {**entry, "sha256": "xyz"} if isinstance(entry, dict) \
            else "xyz"
    elif op == "bad size":
        if "sizes" in manifest:
            manifest["sizes"][first] = -5
        else:
            manifest["files"][first]["size_bytes"] = -5
    path.write_text(json.dumps(manifest))


@st.composite
def verify_cases(draw):
    package = draw(st.booleans())
    order = draw(st.permutations(sorted(FILES)))
    ops = draw(st.lists(st.sampled_from(FILE_OPS), max_size=len(FILES)))
    extras = draw(st.lists(st.sampled_from(EXTRA_OPS), max_size=2))
    manifest_op = draw(st.none() | st.sampled_from(MANIFEST_OPS))
    return package, list(zip(order, ops)), extras, manifest_op


@SETTINGS
@given(verify_cases())
def test_verify_names_every_tampered_file_and_never_hangs(case):
    package, file_ops, extras, manifest_op = case
    root = Path(tempfile.mkdtemp(prefix="edgepack-fuzz-verify-"))
    try:
        folder = make_folder(root, package)
        (root / "outside").mkdir()
        for name, op in file_ops:
            tamper_file(folder, name, op, root / "outside")
        added = [(add_extra(folder, op, i), op) for i, op in enumerate(extras)]
        if manifest_op is not None:
            tamper_manifest(folder, manifest_op)
        before = snapshot(folder)
        code, out, err = cli("verify", folder)
        assert snapshot(folder) == before
        if manifest_op is not None:
            assert code == 2 and "manifest.json" in one_error(err), (manifest_op, err)
            return
        expected = {f"{EXPECTED_KIND[op]}: {name}" for name, op in file_ops + added}
        found = {line.split(" -> ")[0].split(" (")[0] for line in out}
        assert code == (1 if expected else 0), (case, out)
        assert found == (expected or {f"{folder}: every file matches manifest.json"}), case
    finally:
        shutil.rmtree(root, ignore_errors=True)


RECIPE = """\
name = "fuzz-resume"
tolerance = 0.5
[model]
build = "edgepack.zoo:mnist1d_cnn"
args = { width = 4 }
weights = "w.safetensors"
[data]
args = { samples = 300, transfer_samples = 0 }
[[stages]]
kind = "export"
[[stages]]
kind = "quantize"
mode = "dynamic"
"""
RECORD_DAMAGE = ("missing", "not json", "no marker", "fifo", "symlink", "folder")


@pytest.fixture(scope="module")
def recipe_folder(tmp_path_factory):
    """A recipe, its weights file, and a run folder that recorded them (as a run killed
    after its first stage would have)."""
    import torch

    from edgepack.pipeline.recipe import load_recipe
    from edgepack.pipeline.run_report import write_manifest
    from edgepack.zoo import mnist1d_cnn
    from edgepack.export.weights import save_weights

    root = tmp_path_factory.mktemp("fuzz-resume")
    torch.manual_seed(0)
    save_weights(mnist1d_cnn(width=4), root / "w.safetensors")
    (root / "recipe.toml").write_text(RECIPE)
    run = root / "run"
    run.mkdir()
    (run / INPUTS_FILE).write_text(json.dumps(recipe_inputs(load_recipe(root / "recipe.toml"))))
    (run / "01-export").mkdir()
    (run / "01-export" / "config.json").write_text('{"kind": "export"}')
    write_manifest(run)
    return root


def _changed(value):
    """Another value of the same JSON kind (or of another kind)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return "changed"


def _set(tree, dotted: str, value) -> None:
    """Set (value None: delete) the leaf at a dotted key of :func:`_flat`."""
    import re

    parts = [p for p in re.split(r"\.|(\[\d+\])", dotted) if p]
    for part in parts[:-1]:
        tree = tree[int(part[1:-1])] if part.startswith("[") else tree[part]
    last = parts[-1]
    last = int(last[1:-1]) if last.startswith("[") else last
    if value is None:
        del tree[last]
    else:
        tree[last] = value


@st.composite
def resume_cases(draw, keys):
    family = draw(st.sampled_from(("recipe key", "deleted key", "added key", "file size",
                                   "file hash", "record", "held")))
    return family, draw(st.sampled_from(keys)), draw(st.sampled_from(RECORD_DAMAGE))


def _damage_record(path: Path, how: str) -> None:
    path.unlink()
    if how == "not json":
        path.write_text("{")
    elif how == "no marker":
        path.write_text('{"recipe": {}}')
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "symlink":
        path.symlink_to("/etc/hostname")
    elif how == "folder":
        path.mkdir()


def _tampered_run(recipe_folder: Path, case) -> tuple[Path, str]:
    """A copy of the recorded run with its record changed as ``case`` says, and what the
    error line must name."""
    family, key, damage = case
    root = Path(tempfile.mkdtemp(prefix="edgepack-fuzz-resume-"))
    run = root / "run"
    shutil.copytree(recipe_folder / "run", run)
    path = run / INPUTS_FILE
    record = json.loads(path.read_text())
    named = key
    if family in ("recipe key", "deleted key"):
        _set(record["recipe"], key, None if family == "deleted key" else
             _changed(_flat(record["recipe"])[key]))
    elif family == "added key":
        record["recipe"]["model"]["fuzzed"] = 1
        named = "model.fuzzed"
    elif family in ("file size", "file hash"):
        entry = record["files"]["model.weights"]
        entry["size_bytes" if family == "file size" else "sha256"] = \
            entry["size_bytes"] + 1 if family == "file size" else "0" * 64
        named = "(model.weights) changed"
    if family != "record":
        path.write_text(json.dumps(record))
    else:
        _damage_record(path, damage)
        named = INPUTS_FILE
    return root, named


@SETTINGS
@given(data=st.data())
def test_resume_with_changed_inputs_is_refused_naming_them(recipe_folder, data, monkeypatch):
    from edgepack.pipeline.recipe import load_recipe

    keys = sorted(_flat(recipe_inputs(load_recipe(recipe_folder / "recipe.toml"))["recipe"]))
    case = data.draw(resume_cases(keys))
    root, named = _tampered_run(recipe_folder, case)
    held = None
    try:
        if case[0] == "held":
            held = open(root / "run" / LOCK_FILE, "w")
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.write("31337\n")
            held.flush()
            named = "pid 31337"
        before = snapshot(root / "run")
        with monkeypatch.context() as patch:
            patch.setattr("edgepack.pipeline.recipe_runner.prepare_teacher_with_record",
                          lambda *a, **k: pytest.fail("the teacher was prepared"))
            code, _, err = cli("run", recipe_folder / "recipe.toml", "--out", root / "run",
                               "--resume", "--no-progress")
        assert code == 2 and named in one_error(err), (case, err)
        assert snapshot(root / "run") == before
    finally:
        if held is not None:
            held.close()
        shutil.rmtree(root, ignore_errors=True)
