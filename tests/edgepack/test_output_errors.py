"""A full disk or an unwritable folder: one clear line, exit 2, nothing half-written.

Tests run as root on CI, where file modes do not stop writes, so the failure is injected at
the rename that publishes a file (the last step of every write) and at the write itself.
"""

import errno
import os

import pytest

from edgepack.cli.main import main
from edgepack.core.files import atomic_path, atomic_write_json
from tests.bench.conftest import matmul_add


def _no_space(source, *_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(source))


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text('{"old": true}')
    monkeypatch.setattr(os, "replace", _no_space)
    with pytest.raises(OSError):
        atomic_write_json(target, {"new": True})
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_an_error_inside_the_block_removes_the_partial_file(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a model")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_on_the_command_line_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    model = matmul_add(tmp_path / "m.onnx")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(os, "replace", _no_space)
    code = main(["bench", str(model), "--min-runs", "5", "--min-time", "0", "--json",
                 str(out / "r.json")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("edgepack: error:")]
    assert code == 2
    assert len(errors) == 1 and "No space left on device" in errors[0]
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


def test_unwritable_output_folder_is_refused_before_work(tmp_path, monkeypatch, capsys):
    model = matmul_add(tmp_path / "m.onnx")
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked)
                        else real_access(p, mode))
    code = main(["quantize", str(model), "-o", str(locked / "q.onnx"), "--mode", "dynamic"])
    err = capsys.readouterr().err
    assert code == 2 and "is not writable" in err
    assert list(locked.iterdir()) == []
