"""Cache entries are verified against the manifest written with them before every use."""

import json
import os
import time

import pytest

from edgepack.core.cache_entry import MANIFEST, entry_problem, new_entry, open_entry

SOURCE = {"input_sha256": "ab" * 32, "version": 1}


def _make(folder, source=SOURCE, files=None):
    with new_entry(folder, source) as scratch:
        for name, data in (files or {"model.safetensors": b"weights", "sub/config.json": b"{}"}
                           ).items():
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            (scratch / name).write_bytes(data)
    return folder


def test_a_new_entry_verifies_and_lists_every_file(tmp_path):
    entry = _make(tmp_path / "key")
    assert open_entry(entry, SOURCE, "test") == entry
    manifest = json.loads((entry / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["model.safetensors", "sub/config.json"]
    assert manifest["source"] == SOURCE
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no scratch left


def _truncate(entry):
    (entry / "model.safetensors").write_bytes(b"weig")


def _flip(entry):
    (entry / "model.safetensors").write_bytes(b"WEIGHTS")


def _drop(entry):
    (entry / "sub" / "config.json").unlink()


def _no_manifest(entry):
    (entry / MANIFEST).unlink()


def _bad_manifest(entry):
    (entry / MANIFEST).write_text("[1, 2")


def _swap(entry):
    other = _make(entry.parent / "other", {**SOURCE, "input_sha256": "cd" * 32})
    for path in entry.iterdir():
        path.unlink() if path.is_file() else None
    for name in ("model.safetensors", MANIFEST):
        os.replace(other / name, entry / name)


def _link(entry):
    target = entry.parent / "elsewhere"
    target.write_bytes(b"weights")
    (entry / "model.safetensors").unlink()
    (entry / "model.safetensors").symlink_to(target)


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "is 4 bytes, not the 7 recorded"),
    (_flip, "does not match the sha256"),
    (_drop, "sub/config.json is missing"),
    (_no_manifest, "no manifest (a half-made entry)"),
    (_bad_manifest, "manifest is not valid JSON"),
    (_swap, "made from another input"),
    (_link, "not a plain file"),
])
def test_a_damaged_entry_is_removed_with_one_line_and_rebuilt(tmp_path, capsys, damage, reason):
    entry = _make(tmp_path / "key")
    damage(entry)
    assert reason in entry_problem(entry, SOURCE)
    assert open_entry(entry, SOURCE, "a test entry") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(entry) in err[0] and reason in err[0] and "rebuilding" in err[0]
    assert not entry.exists()
    assert open_entry(_make(entry), SOURCE, "a test entry") == entry


def test_a_failed_build_leaves_no_entry_and_no_scratch(tmp_path):
    with pytest.raises(RuntimeError), new_entry(tmp_path / "key", SOURCE) as scratch:
        (scratch / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_stale_scratch_folder_of_a_killed_run_is_cleared(tmp_path):
    stale = tmp_path / ".key.abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    old = time.time() - 2 * 24 * 3600
    os.utime(stale, (old, old))
    _make(tmp_path / "key")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_a_good_entry_placed_first_by_another_process_is_kept(tmp_path):
    entry = tmp_path / "key"
    with new_entry(entry, SOURCE) as scratch:
        (scratch / "model.safetensors").write_bytes(b"weights")
        (scratch / "sub").mkdir()
        (scratch / "sub" / "config.json").write_bytes(b"{}")
        _make(entry)    # the other process finishes first
    assert entry_problem(entry, SOURCE) is None


def test_a_link_in_place_of_the_entry_is_unlinked_not_followed(tmp_path, capsys):
    real = _make(tmp_path / "real")
    (tmp_path / "key").symlink_to(real)
    assert open_entry(tmp_path / "key", SOURCE, "test") is None
    assert "not a folder" in capsys.readouterr().err
    assert entry_problem(real, SOURCE) is None      # the link's target is untouched
