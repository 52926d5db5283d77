"""Artifact files that are never half-written, and never written over a user's file.

Every artifact is written to a temporary name in its final folder, flushed to disk and
renamed into place (``os.replace`` is atomic on one filesystem), so a crash leaves either
the old file or the new one, never a torn one. The temporary file is made private
(``mkstemp``: mode 0600) and given the mode the user's umask asks for just before the
rename, like any file ``open()`` creates.

:func:`check_not_input` refuses an output path that is (or resolves to) one of the
command's inputs, so ``bench M.onnx --json M.onnx`` cannot replace the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


def cache_dir() -> Path:
    """edgepack's cache folder: ``$XDG_CACHE_HOME/edgepack`` (``~/.cache/edgepack``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgepack"


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file: equal after resolving links, or one inode."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_input(output: str | os.PathLike, inputs, flag: str = "output") -> None:
    """Refuse an output path that is one of the inputs (it would be overwritten)."""
    for given in inputs:
        if given and same_file(output, given):
            raise ValueError(f"{flag} {output} is the input file {given}; writing it would "
                             "replace your input; choose another output path")


def _refuse_system_path(path: Path) -> None:
    """/proc, /sys and /dev hold the kernel's files and devices, never an artifact."""
    resolved = str(path.resolve())
    for folder in SYSTEM_FOLDERS:
        if resolved == folder or resolved.startswith(folder + "/"):
            raise ValueError(f"output {path} is inside {folder}, a system folder; choose a "
                             "path in a normal folder")


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse an output path that is a folder, a system path, or whose folder cannot be
    written."""
    path = Path(path)
    _refuse_system_path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is an existing folder; expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"output folder {parent} is an existing file; expected a folder")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise ValueError(f"output folder {parent} is not writable")
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """Refuse an output folder that is an existing file, a system path, or cannot be
    written."""
    path = Path(path)
    _refuse_system_path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output {path} is an existing file; expected a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise ValueError(f"output folder {path} is not writable (no write access to {probe})")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place.

    The caller writes the temporary file (any library that takes a path will do); if the
    block raises, the temporary file is removed and ``path`` is untouched.
    """
    path = check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                        dir=path.parent)
    except OSError as exc:
        raise readable_os_error(exc, path) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, path)
        except OSError as exc:
            raise readable_os_error(exc, path) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Make the folder ``path`` (and missing parents) for a block that fills it; if the block
    fails, the folders it made are removed again (when empty), so a refused command leaves
    nothing behind."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for folder in missing:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable_os_error(exc: OSError, path: Path) -> OSError:
    """The same error, naming the file the user asked for (not a temporary name) in words."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    error = OSError(f"cannot write {path}: {reason}")
    error.errno = exc.errno
    return error


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()



@contextlib.contextmanager
def working_directory(folder: str | os.PathLike) -> Iterator[None]:
    """Run the block with ``folder`` as the current directory (tools that resolve paths
    relative to it: ONNX Runtime's pre-processing, onnx's checker on external data)."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
