"""``edgepack verify`` checks run folders and packages alike: sizes before hashes, symlinks
reported, FIFOs, sockets and devices never opened, and a tampered manifest refused. It never
writes or changes anything."""

from __future__ import annotations

import json
import os
import stat

import pytest

from edgepack.pipeline import verify
from tests.bench.conftest import matmul_add
from tests.edgepack.helpers import error_line, run_cli, run_cli_output

ARTIFACT = "01-export/model.onnx"


def make_run(folder):
    """A small run folder (an artifact, a report, a hidden scratch folder) and its manifest,
    written by the pipeline's own writer."""
    from edgepack.pipeline.run_report import write_manifest

    (folder / "01-export").mkdir(parents=True)
    (folder / ARTIFACT).write_bytes(b"model bytes")
    (folder / "report.json").write_text("{}")
    (folder / ".scratch.x").mkdir()
    (folder / ".scratch.x" / "t.onnx").write_bytes(b"scratch")
    write_manifest(folder)
    return folder


def snapshot(folder) -> dict:
    """Every entry's type, size and time (and a small regular file's bytes), read without
    following links or opening anything special."""
    state = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            small = stat.S_ISREG(info.st_mode) and info.st_size < 1 << 20
            with open(path, "rb") if small else open(os.devnull, "rb") as handle:
                state[path] = (info.st_mode, info.st_size, info.st_mtime_ns, handle.read())
    return state


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A package written by ``edgepack package``."""
    from edgepack.cli.main import main

    root = tmp_path_factory.mktemp("package")
    assert main(["package", str(matmul_add(root / "m.onnx")), "-o", str(root / "pkg")]) == 0
    return root / "pkg"


def _verify(capsys, folder) -> tuple[int, list[str], str]:
    before = snapshot(folder)
    code, out, err = run_cli_output(capsys, "verify", folder)
    assert snapshot(folder) == before          # verify never writes
    return code, out.splitlines(), err


def test_an_untouched_package_verifies(package, capsys):
    code, out, _ = _verify(capsys, package)
    assert code == 0 and out == [f"{package}: every file matches manifest.json (package)"]


def test_a_changed_package_file_is_named(package, tmp_path, capsys):
    import shutil

    pkg = tmp_path / "pkg"
    shutil.copytree(package, pkg)
    data = bytearray((pkg / "model.ort").read_bytes())
    data[-1] ^= 1
    (pkg / "model.ort").write_bytes(bytes(data))
    (pkg / "notes.txt").write_text("mine")
    code, out, err = _verify(capsys, pkg)
    assert code == 1 and out == ["changed: model.ort", "extra: notes.txt"]
    assert "1 changed, 0 missing, 1 extra" in err


def test_the_run_manifest_records_sizes(tmp_path):
    manifest = json.loads((make_run(tmp_path / "run") / "manifest.json").read_text())
    assert manifest["sizes"] == {ARTIFACT: 11, "report.json": 2}


def _fifo(path):
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _socket(path):
    path.unlink()
    os.mknod(path, stat.S_IFSOCK | 0o600)


def _device(path):
    path.unlink()
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device file needs CAP_MKNOD")


@pytest.mark.parametrize("make, what", [(_fifo, "a FIFO"), (_socket, "a socket"),
                                        (_device, "a character device")])
def test_a_special_file_in_place_of_an_artifact_is_reported_unopened(tmp_path, capsys, make,
                                                                      what):
    run = make_run(tmp_path / "run")
    make(run / ARTIFACT)
    code, out, _ = _verify(capsys, run)
    assert code == 1 and out == [f"special: {ARTIFACT} ({what}, not opened)"]


@pytest.mark.parametrize("make, what", [(_fifo, "a FIFO"), (_socket, "a socket")])
def test_a_special_manifest_is_refused_unopened(tmp_path, capsys, make, what):
    run = make_run(tmp_path / "run")
    make(run / "manifest.json")
    code, _, err = _verify(capsys, run)
    line = error_line(err)
    assert code == 2 and f"manifest.json is {what}, not a regular file" in line


def test_a_symlinked_manifest_is_refused(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (tmp_path / "copy.json").write_bytes((run / "manifest.json").read_bytes())
    (run / "manifest.json").unlink()
    (run / "manifest.json").symlink_to(tmp_path / "copy.json")
    code, _, err = _verify(capsys, run)
    assert code == 2 and "manifest.json is a symlink" in error_line(err)


def test_a_file_swapped_for_a_symlink_to_a_copy_fails(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    copy = tmp_path / "elsewhere.onnx"
    copy.write_bytes((run / ARTIFACT).read_bytes())     # the same bytes: only the link differs
    (run / ARTIFACT).unlink()
    (run / ARTIFACT).symlink_to(copy)
    code, out, err = _verify(capsys, run)
    assert code == 1 and out == [f"symlink: {ARTIFACT} -> {copy}"]
    assert "1 symlinked" in err


def test_a_symlinked_folder_and_an_unlisted_link_are_reported(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "01-export").rename(tmp_path / "moved")
    (run / "01-export").symlink_to(tmp_path / "moved")
    (run / "link").symlink_to("/etc/hostname")
    code, out, _ = _verify(capsys, run)
    assert code == 1
    assert out == [f"missing: {ARTIFACT}", f"symlink: 01-export -> {tmp_path / 'moved'}",
                   "symlink: link -> /etc/hostname"]


def test_sizes_are_compared_before_anything_is_read(tmp_path, capsys, monkeypatch):
    """A 64 GB sparse file in place of an artifact, and another beside it: both found
    without reading a byte of either."""
    run = make_run(tmp_path / "run")
    for name in (ARTIFACT, "huge.bin"):
        with open(run / name, "wb") as handle:
            handle.truncate(64 << 30)
    read = []
    real = verify._read_regular
    monkeypatch.setattr(verify, "_read_regular", lambda path, digest=None: (
        read.append(path.name), real(path, digest))[1])
    code, out, _ = _verify(capsys, run)
    assert code == 1 and out == [f"changed: {ARTIFACT}", "extra: huge.bin"]
    assert read == ["manifest.json", "report.json"]


def test_a_manifest_without_sizes_is_still_verified_by_hash(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["sizes"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / ARTIFACT).write_bytes(b"model BYTES")
    code, out, _ = _verify(capsys, run)
    assert code == 1 and out == [f"changed: {ARTIFACT}"]


@pytest.mark.parametrize("files, named", [
    ({"../outside.txt": "0" * 64}, "'../outside.txt', which is not a path inside"),
    ({"/etc/passwd": "0" * 64}, "'/etc/passwd', which is not a path inside"),
    ({"report.json": "not a digest"}, "the entry for report.json has no sha256"),
    ({"report.json": ["0" * 64]}, "the entry for report.json has no sha256"),
])
def test_a_tampered_manifest_is_refused_naming_the_entry(tmp_path, capsys, files, named):
    run = make_run(tmp_path / "run")
    (run / "manifest.json").write_text(json.dumps({"edgepack_run": True, "files": files}))
    code, _, err = _verify(capsys, run)
    assert code == 2 and named in error_line(err)


def test_a_package_manifest_with_a_bad_size_is_refused(package, tmp_path, capsys):
    import shutil

    pkg = tmp_path / "pkg"
    shutil.copytree(package, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["files"]["model.ort"]["size_bytes"] = "big"
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_cli(capsys, "verify", pkg)
    assert code == 2 and "model.ort has a size of 'big'" in error_line(err)


PACKAGED_RUN = """\
name = "packaged"
tolerance = 1.0
[model]
build = "edgepack.zoo:mnist1d_cnn"
args = { width = 4 }
[data]
args = { samples = 300, transfer_samples = 0, calibration_samples = 16 }
[[stages]]
kind = "export"
exporter = "torchscript"
[[stages]]
kind = "package"
[bench]
min_runs = 3
min_time_s = 0.0
warmup = 1
[robustness]
samples = 0
"""


def test_a_runs_package_stage_verifies_as_a_package_and_within_its_run(tmp_path, capsys):
    (tmp_path / "recipe.toml").write_text(PACKAGED_RUN)
    run = tmp_path / "run"
    code, _ = run_cli(capsys, "run", tmp_path / "recipe.toml", "--out", run, "--no-progress")
    assert code == 0
    assert _verify(capsys, run)[:2] == (0, [f"{run}: every file matches manifest.json (run)"])
    stage = run / "02-package"
    assert _verify(capsys, stage)[:2] == (
        0, [f"{stage}: every file matches manifest.json (package)"])
    record = json.loads((stage / "record.json").read_text())
    (stage / "record.json").write_text(json.dumps({**record, "kept": False}))
    code, out, _ = _verify(capsys, stage)
    assert code == 1 and out == ["changed: record.json"]


def test_a_package_manifest_inside_a_run_is_listed_and_checked(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "02-package").mkdir(parents=True)
    (run / "02-package" / "manifest.json").write_text('{"edgepack_package": true}')
    make_run(run)
    assert "02-package/manifest.json" in json.loads((run / "manifest.json").read_text())["files"]
    (run / "02-package" / "manifest.json").write_text('{"edgepack_package": false}')
    code, out, _ = _verify(capsys, run)
    assert code == 1 and out == ["changed: 02-package/manifest.json"]


def test_a_run_manifest_written_before_sizes_did_not_list_package_manifests(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "02-package").mkdir()
    (run / "02-package" / "manifest.json").write_text('{"edgepack_package": true}')
    (run / "manifest.json").write_text(json.dumps({"edgepack_run": True,
                                                   "files": manifest["files"]}))
    assert _verify(capsys, run)[0] == 0
