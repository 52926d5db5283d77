"""Cache entries that are verified before every use: a folder and a manifest of its files.

edgepack caches work that is slow to redo (a GGUF converted to fp32 safetensors, a trained
teacher). A cache entry is an input like any other: it can be truncated (a full disk, a killed
copy), swapped (another entry's files moved in), or half-made (a scratch folder renamed by
hand). So an entry is a folder holding its files and :data:`MANIFEST`, written last: what the
entry was made from (``source``, e.g. the input's sha256 and the procedure's version) and the
size and sha256 of each file. An entry is used only when its manifest names the same source
and every file still matches; otherwise it is removed and rebuilt, and one line on stderr
says so::

    entry = cache_dir() / "models" / key
    if open_entry(entry, source, "converted model") is None:
        with new_entry(entry, source) as scratch:
            convert(input_file, scratch)       # a failure leaves no entry behind
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from edgepack.core.files import atomic_write_json, sha256_file

MANIFEST = "cache-manifest.json"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20
STALE_SCRATCH_SECONDS = 24 * 3600     # a scratch folder this old belongs to a killed run


def _manifest(folder: Path) -> dict | str:
    """The manifest's content, or why it cannot be read."""
    path = folder / MANIFEST
    if not path.is_file():
        return "it has no manifest (a half-made entry)"
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        return "its manifest is too large to be one of ours"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "its manifest is not valid JSON"
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or \
            not data["files"]:
        return "its manifest lists no files"
    return data


def _file_problem(folder: Path, name: str, recorded) -> str | None:
    """Why one listed file does not match its record (None: it does)."""
    if not isinstance(recorded, dict) or Path(name).is_absolute() or ".." in Path(name).parts:
        return f"its manifest's entry for {name!r} is malformed"
    path = folder / name
    if path.is_symlink() or not path.is_file():
        return f"{name} is missing (or not a plain file)"
    if path.stat().st_size != recorded.get("size"):
        return f"{name} is {path.stat().st_size:,} bytes, not the {recorded.get('size')} recorded"
    if sha256_file(path) != recorded.get("sha256"):
        return f"{name} does not match the sha256 recorded when it was written"
    return None


def entry_problem(folder: str | os.PathLike, source: dict) -> str | None:
    """Why the entry at ``folder`` cannot be used for ``source`` (None: it verifies)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return "it is not a folder"
    data = _manifest(folder)
    if isinstance(data, str):
        return data
    if data.get("source") != source:
        return "it was made from another input (its manifest names another source)"
    for name, recorded in data["files"].items():
        problem = _file_problem(folder, name, recorded)
        if problem:
            return problem
    return None


def remove_entry(folder: Path) -> None:
    """Remove a cache entry (a link or a stray file is unlinked, never followed)."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.is_dir():
        shutil.rmtree(folder)


def open_entry(folder: str | os.PathLike, source: dict, what: str) -> Path | None:
    """The entry's folder when it verifies; None when there is none, or when it did not
    verify: then it is removed, and one line on stderr says why it is rebuilt."""
    folder = Path(folder)
    if not os.path.lexists(folder):
        return None
    problem = entry_problem(folder, source)
    if problem is None:
        return folder
    print(f"edgepack: cache entry {folder} ({what}) cannot be used: {problem}; rebuilding it",
          file=sys.stderr)
    remove_entry(folder)
    return None


def write_manifest(folder: Path, source: dict) -> None:
    """Record ``source`` and every file's size and sha256; written last."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ValueError(f"cache entry {folder}: {path.name} is a symbolic link; an entry "
                             "holds plain files only")
        if path.is_file() and path.name != MANIFEST:
            files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size,
                                                          "sha256": sha256_file(path)}
    atomic_write_json(folder / MANIFEST, {"version": MANIFEST_VERSION, "source": source,
                                          "files": files})


def _remove_stale_scratch(folder: Path) -> None:
    """Scratch folders of this entry left by runs killed long ago."""
    now = time.time()
    for stale in folder.parent.glob(f".{folder.name}.*"):
        with contextlib.suppress(OSError):
            if stale.is_dir() and not stale.is_symlink() and \
                    now - stale.stat().st_mtime > STALE_SCRATCH_SECONDS:
                shutil.rmtree(stale)


@contextlib.contextmanager
def new_entry(folder: str | os.PathLike, source: dict) -> Iterator[Path]:
    """A scratch folder beside ``folder`` for the block to fill; on success its manifest
    is written and it is renamed into place, so no reader ever sees a half-made entry."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_scratch(folder)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield scratch
        write_manifest(scratch, source)
        if os.path.lexists(folder) and entry_problem(folder, source) is not None:
            remove_entry(folder)
        try:
            os.replace(scratch, folder)
        except OSError as exc:   # another process may have placed a good entry first
            if entry_problem(folder, source) is not None:
                raise OSError(f"cache entry {folder} could not be put in place: "
                              f"{exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


__all__ = ["MANIFEST", "entry_problem", "new_entry", "open_entry", "remove_entry",
           "write_manifest"]
