"""The converted-GGUF cache is an input too: each entry is verified against the manifest
written with it before use, and a truncated, swapped or half-made entry is converted again
with one line on stderr, never used and never a dead end."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("gguf", reason="pip install 'edgepack[llm]'")

from edgepack.core.cache_entry import MANIFEST  # noqa: E402
from edgepack.core.files import sha256_file  # noqa: E402
from edgepack.export.gguf import cached_hf_folder  # noqa: E402
from tests.export.gguf_files import write_llama_gguf  # noqa: E402


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Two tiny GGUFs (other weights), each converted once into a cache made for the module:
    returns (cache root, {name: (gguf path, entry folder, weights sha256)})."""
    base = tmp_path_factory.mktemp("gguf-cache")
    found = {}
    for name, seed in (("a", 0), ("b", 1)):
        path = write_llama_gguf(base / f"{name}.gguf", seed=seed)
        entry = cached_hf_folder(path, base / "cache")
        found[name] = (path, entry, sha256_file(entry / "model.safetensors"))
    return base / "cache", found


@pytest.fixture
def cache(tmp_path, converted):
    """A private copy of the module's cache, to damage."""
    root, found = converted
    shutil.copytree(root, tmp_path / "cache")
    return tmp_path / "cache", {k: (p, tmp_path / "cache" / e.name, h)
                                for k, (p, e, h) in found.items()}


def test_a_verified_entry_is_used_silently(cache, capsys):
    root, found = cache
    path, entry, _ = found["a"]
    assert cached_hf_folder(path, root) == entry
    assert capsys.readouterr().err == ""
    manifest = json.loads((entry / MANIFEST).read_text())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])


def _truncate(entry, other):
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])


def _swap(entry, other):
    """The other model's converted entry, manifest and all, moved in under this key."""
    shutil.rmtree(entry)
    shutil.copytree(other, entry)


def _swap_weights(entry, other):
    shutil.copy(other / "model.safetensors", entry / "model.safetensors")


def _half_made(entry, other):
    """A conversion killed before its manifest, its folder renamed into place by hand."""
    (entry / MANIFEST).unlink()
    (entry / "model.safetensors").unlink()


def _made_before_manifests(entry, other):
    (entry / MANIFEST).unlink()


def _a_file(entry, other):
    shutil.rmtree(entry)
    entry.write_text("not a folder")


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "model.safetensors is"),
    (_swap, "made from another input"),
    (_swap_weights, "model.safetensors"),
    (_half_made, "no manifest"),
    (_made_before_manifests, "no manifest"),
    (_a_file, "not a folder"),
])
def test_a_damaged_entry_is_converted_again_with_one_line(cache, capsys, damage, reason):
    root, found = cache
    path, entry, weights_sha = found["a"]
    damage(entry, found["b"][1])
    assert cached_hf_folder(path, root) == entry
    lines = capsys.readouterr().err.strip().splitlines()
    cache_lines = [line for line in lines if "cache entry" in line]
    assert len(cache_lines) == 1 and reason in cache_lines[0] and str(entry) in cache_lines[0]
    assert "rebuilding" in cache_lines[0]
    assert sha256_file(entry / "model.safetensors") == weights_sha   # a's own weights again
    assert cached_hf_folder(path, root) == entry                     # and now verified
    assert "cache entry" not in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == sorted(e.name for _, e, _ in found.values())
