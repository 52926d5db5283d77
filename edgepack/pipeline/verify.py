"""Check a run folder or a package against its manifest: every difference named.

Two kinds of folder carry edgepack's ``manifest.json``: a run folder (``"edgepack_run":
true``, ``files`` maps each path to its sha256, ``sizes`` to its size) and a package made by
``edgepack package`` or a package stage (``"edgepack_package": true``, ``files`` maps each name
to its ``sha256`` and ``size_bytes``). Both are verified the same way:

- the folder is walked without following links and nothing but a regular file is ever
  opened: a FIFO, device or socket is reported as special (reading a FIFO would wait
  forever), and a symlink is reported with its target (where the manifest recorded a file it
  is a failure: the file it points to may be a copy anywhere, changed at will);
- a listed file whose size differs from the recorded one is changed without being read (a
  64 GB sparse file costs nothing); only a file of the recorded size is hashed;
- a file the manifest does not list is extra; hidden files and folders (a scratch folder,
  the run's lock) are not part of a run and are not listed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgepack.pipeline.run_folder import RUN_MARKER

MANIFEST = "manifest.json"
PACKAGE_MARKER = "edgepack_package"   # edgepack.export.package's marker (that module loads ONNX Runtime)
MAX_MANIFEST_BYTES = 64 << 20
KINDS = ("changed", "missing", "extra", "symlink", "special")
SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
           (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


@dataclass(frozen=True)
class Expected:
    """What the manifest recorded for one file."""

    sha256: str
    size: int | None   # None: a run manifest written before sizes were recorded


def special_kind(mode: int) -> str | None:
    """``"a FIFO"``, ``"a socket"``, ...: what a file that is neither regular, a folder nor a
    link is (None for those)."""
    return next((word for test, word in SPECIAL if test(mode)), None)


def read_manifest_file(folder: Path) -> dict:
    """The manifest as JSON; a missing, special, linked or oversized one is refused without
    being opened."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; expected an edgepack run folder or package")
    path = folder / MANIFEST
    try:
        found = path.lstat()
    except FileNotFoundError:
        raise ValueError(f"{folder} has no {MANIFEST}: not a finished edgepack run or "
                         "package") from None
    if stat.S_ISLNK(found.st_mode):
        raise ValueError(f"{path} is a symlink (to {os.readlink(path)}); a manifest must be "
                         "the folder's own regular file")
    if not stat.S_ISREG(found.st_mode):
        what = special_kind(found.st_mode) or "a folder"
        raise ValueError(f"{path} is {what}, not a regular file; it was not opened")
    if found.st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"{path} is {found.st_size} bytes, larger than any edgepack manifest "
                         f"({MAX_MANIFEST_BYTES >> 20} MiB at most)")
    try:
        return json.loads(_read_regular(path).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read as JSON ({type(exc).__name__})") from exc


def _check_name(name, path: Path) -> str:
    """A listed name must be a relative path inside the folder."""
    parts = PurePosixPath(name).parts if isinstance(name, str) and name else ()
    if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
        raise ValueError(f"{path} lists {name!r}, which is not a path inside its folder; "
                         "the manifest has been tampered with or is not edgepack's")
    return str(PurePosixPath(*parts))


def _check_digest(name: str, digest, size, path: Path) -> Expected:
    if not isinstance(digest, str) or len(digest) != 64 or \
            any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"{path}: the entry for {name} has no sha256 (64 hex digits)")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"{path}: the entry for {name} has a size of {size!r}; expected a "
                         "whole number of bytes")
    return Expected(digest, size)


def manifest_entries(manifest, path: Path) -> tuple[str, dict[str, Expected]]:
    """``("run" | "package", {name: Expected})`` from an edgepack manifest."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        files = None
    if files is not None and manifest.get(RUN_MARKER) is True:
        sizes = manifest.get("sizes") if isinstance(manifest.get("sizes"), dict) else {}
        return "run", {_check_name(n, path): _check_digest(n, d, sizes.get(n), path)
                       for n, d in files.items()}
    if files is not None and manifest.get(PACKAGE_MARKER) is True:
        entries = {}
        for name, entry in files.items():
            entry = entry if isinstance(entry, dict) else {}
            entries[_check_name(name, path)] = _check_digest(
                name, entry.get("sha256"), entry.get("size_bytes", -1), path)
        return "package", entries
    raise ValueError(f"{path} is not an edgepack run manifest nor a package manifest (expected "
                     f"\"{RUN_MARKER}\": true or \"{PACKAGE_MARKER}\": true, and a files table)")


def walk(folder: Path) -> dict[str, os.stat_result]:
    """Every visible entry under ``folder`` that is not a folder, by relative path, with its
    own ``lstat``: links are not followed and nothing is opened."""
    found, pending = {}, [(folder, PurePosixPath())]
    while pending:
        where, relative = pending.pop()
        with os.scandir(where) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                name = relative / entry.name
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    pending.append((Path(entry.path), name))
                else:
                    found[str(name)] = info
    return found


def _read_regular(path: Path, digest=None) -> bytes:
    """Read a regular file without following a link or waiting on a FIFO put there since it
    was looked at; with ``digest``, feed it the bytes instead of returning them."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(f"{path} is no longer a regular file")
        if digest is None:
            return handle.read()
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return b""


def _differs(path: Path, info: os.stat_result, expected: Expected) -> bool:
    """Whether a regular file differs from its entry: the size first, then the sha256."""
    if expected.size is not None and info.st_size != expected.size:
        return True
    digest = hashlib.sha256()
    try:
        _read_regular(path, digest)
    except OSError:
        return True
    return digest.hexdigest() != expected.sha256


def _problem(folder: Path, name: str, info: os.stat_result) -> tuple[str, str] | None:
    """A symlink or special file, as ``(kind, line)`` (None for a regular file)."""
    if stat.S_ISLNK(info.st_mode):
        return "symlink", f"{name} -> {os.readlink(folder / name)}"
    kind = special_kind(info.st_mode)
    return ("special", f"{name} ({kind}, not opened)") if kind else None


@dataclass
class Verdict:
    """What ``verify`` found: the folder's kind (``"run"`` or ``"package"``) and, for every
    kind of difference in :data:`KINDS`, the entries that have it (all empty: it matches)."""

    kind: str
    found: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return not any(self.found.values())


def stage_files(folder: Path) -> dict[str, Expected]:
    """A package made by a run's package stage shares its folder with the stage's own
    ``config.json`` and ``record.json``: the run's manifest lists them, so they are checked
    against it (nothing, for a package outside a run)."""
    try:
        kind, entries = manifest_entries(read_manifest_file(folder.parent),
                                         folder.parent / MANIFEST)
    except ValueError:
        return {}
    prefix = f"{folder.name}/"
    return {name[len(prefix):]: entry for name, entry in entries.items()
            if kind == "run" and name.startswith(prefix) and name != prefix + MANIFEST}


def verify_folder(folder) -> Verdict:
    """Compare a run folder or package with its manifest (see the module docstring)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    kind, expected = manifest_entries(read_manifest_file(folder), manifest_path)
    if kind == "package":
        expected = {**stage_files(folder), **expected}
    present = walk(folder)
    present.pop(MANIFEST, None)
    if kind == "run" and all(entry.size is None for entry in expected.values()):
        # written before run manifests recorded sizes, and listed no package's manifest.json
        present = {n: i for n, i in present.items() if PurePosixPath(n).name != MANIFEST}
    found: dict[str, list[str]] = {k: [] for k in KINDS}
    for name in sorted(set(expected) | set(present)):
        info = present.get(name)
        if info is None:
            found["missing"].append(name)
            continue
        problem = _problem(folder, name, info)
        if problem is not None:
            found[problem[0]].append(problem[1])
        elif name not in expected:
            found["extra"].append(name)
        elif _differs(folder / name, info, expected[name]):
            found["changed"].append(name)
    return Verdict(kind, found)


verify_run = verify_folder   # the name earlier callers import
