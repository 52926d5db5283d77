"""One run folder, one writer: an exclusive ``flock`` on ``.edgepack.lock`` inside it.

Two ``edgepack run`` processes given the same ``--out`` would otherwise interleave their
stage folders and reports. The lock is taken when the run folder is opened and held for the
whole run; the kernel drops it when the process exits or is killed, so a killed run never
leaves a stale lock behind (its file stays, unlocked, and is reused). The file holds the
holder's pid, for the message the second process prints; it is hidden, so it is neither in
the manifest nor a reason to call the folder someone else's. A run that ends removes it while
still holding the lock, and a process that locks the file checks it is still the one at that
path, so a file removed meanwhile can never give two writers a lock each.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
from pathlib import Path

LOCK_FILE = ".edgepack.lock"

_HELD: dict[Path, int] = {}   # folder -> the open descriptor holding its lock


def _key(folder: Path) -> Path:
    return Path(os.path.abspath(folder))


def _holder(path: Path) -> str:
    """The pid the holder wrote into the lock file, in words."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(32).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "a process that has not written its pid yet"


def _busy(folder: Path, path: Path) -> ValueError:
    return ValueError(f"run folder {folder} is in use by another edgepack run ({_holder(path)} "
                      f"holds {path.name}); wait for it to finish, or choose another --out")


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def check_not_locked(folder: str | os.PathLike) -> None:
    """Refuse a folder another process holds, without creating or changing anything: the
    lock is tried on the existing lock file (opened read-only) and let go at once."""
    folder = Path(folder)
    path = folder / LOCK_FILE
    if _key(folder) in _HELD or not path.is_file() or path.is_symlink():
        return
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return   # unreadable: the lock taken when the folder is opened decides
    try:
        if not _try_lock(descriptor):
            raise _busy(folder, path)
    finally:
        os.close(descriptor)   # closing drops the probe's lock


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path, follow_symlinks=False))
    except OSError:
        return False


def _open_locked(path: Path, attempts: int = 3) -> int | None:
    """A descriptor of the lock file at ``path``, locked (None: another process holds it).
    A lock won on a file that a finishing run removed meanwhile is let go and tried again."""
    for _ in range(attempts):
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        if not _try_lock(descriptor):
            os.close(descriptor)
            return None
        if _same_file(descriptor, path):
            return descriptor
        os.close(descriptor)
    raise ValueError(f"{path} keeps being replaced while edgepack locks it; is another "
                     "program removing it?")


def lock_run_folder(folder: str | os.PathLike) -> None:
    """Take the folder's lock for this process (again: nothing to do), or refuse naming the
    holder's pid. The folder must exist."""
    folder = Path(folder)
    if _key(folder) in _HELD:
        return
    path = folder / LOCK_FILE
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ValueError(f"{path} is not a regular file; edgepack keeps its run lock there: "
                         "remove it, or choose another --out")
    descriptor = _open_locked(path)
    if descriptor is None:
        raise _busy(folder, path)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    _HELD[_key(folder)] = descriptor


def release_run_folder(folder: str | os.PathLike) -> None:
    """Remove the lock file and let go of the lock (removed first, while still held)."""
    folder = Path(folder)
    descriptor = _HELD.pop(_key(folder), None)
    if descriptor is None:
        return
    try:
        if _same_file(descriptor, folder / LOCK_FILE):
            (folder / LOCK_FILE).unlink()
    except OSError:
        pass   # a folder made read-only or removed meanwhile: the lock goes with the process
    finally:
        os.close(descriptor)


def releases_run_folders(function):
    """Release every run-folder lock ``function`` took, however it ends: a run holds its
    folder for exactly as long as it runs, also when called from a longer-lived process."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        before = set(_HELD)
        try:
            return function(*args, **kwargs)
        finally:
            for folder in set(_HELD) - before:
                release_run_folder(folder)
    return run
