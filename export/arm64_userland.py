"""An ARM64 (aarch64) Linux userland that runs ONNX Runtime's own aarch64 wheel under qemu-user.

Built once from Debian's packages and PyPI only, then cached:

1. ``debootstrap --arch=arm64 --variant=minbase --foreign --include=python3 bookworm``
   downloads Debian 12's arm64 packages and unpacks the essential ones (about 30 s). Its
   second stage, which configures the packages by running them under emulation, takes
   minutes and is not needed: ``dpkg-deb -x`` unpacks every downloaded package instead,
   python3.11 among them, in seconds. Nothing in the userland is ever *configured*; it only
   has to hold the files python3 and ONNX Runtime read.
2. ``pip download --platform manylinux_2_28_aarch64 --only-binary=:all:`` fetches the
   ``onnxruntime`` wheel of the same version as this machine's and a numpy wheel for
   CPython 3.11; they are unzipped into ``/opt/edgepack/site`` inside the userland.

The finished folder is renamed into place in one step (a half-built userland is never used)
and holds ``userland.json``: what it was built from, when, how long it took and its size.
Building needs root (debootstrap unpacks files owned by root) and the Debian packages
``debootstrap`` and ``qemu-user-static``; running it does not (see :mod:`edgepack.export.arm64_check`).
Nothing is registered with the kernel's binfmt_misc: qemu is always called by its path.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgepack.core.errors import BadInput
from edgepack.core.files import sha256_file

SUITE = "bookworm"                       # Debian 12: python3.11, glibc 2.36
MIRROR = "http://deb.debian.org/debian"
GUEST_PYTHON = "/usr/bin/python3"
GUEST_SITE = "/opt/edgepack/site"
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                   "manylinux_2_17_aarch64", "manylinux2014_aarch64")
GUEST_PYTHON_VERSION = "3.11"            # bookworm's python3
USERLAND_JSON = "userland.json"
CACHE_ENV = "EDGEPACK_ARM64_CACHE"
UNUSED_FOLDERS = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
LAYOUT_VERSION = 1                       # bump when the build changes, to retire old folders
SETUP_HINT = ("build it with `edgepack env --setup-arm64` (as root, with the Debian packages "
              "qemu-user-static and debootstrap: apt-get install qemu-user-static debootstrap)")


@dataclass(frozen=True)
class Userland:
    """A built userland: its root folder and what ``userland.json`` says of it."""

    folder: Path
    info: dict

    @property
    def root(self) -> Path:
        """The guest's ``/``."""
        return self.folder / "root"


def qemu_binary() -> Path:
    """The static qemu-user emulator for aarch64, or BadInput saying how to get it."""
    found = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if not found:
        raise BadInput("the arm64 check needs qemu-user (qemu-aarch64-static), which is not "
                       "on PATH; install it: apt-get install qemu-user-static")
    return Path(found)


def qemu_version(qemu: Path) -> str:
    out = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def userland_key(onnxruntime_version: str, numpy_version: str) -> str:
    """The cache folder name: one userland per Debian suite and wheel versions."""
    return (f"debian-{SUITE}-py{GUEST_PYTHON_VERSION}-onnxruntime{onnxruntime_version}-"
            f"numpy{numpy_version}-v{LAYOUT_VERSION}")


def wanted_versions() -> tuple[str, str]:
    """The onnxruntime and numpy versions the userland gets: this machine's own (of the
    modules that run here, whichever distribution installed them), so the two sides of the
    check differ only by the CPU architecture."""
    import numpy
    import onnxruntime

    return onnxruntime.__version__, numpy.__version__


def default_cache_root() -> Path:
    """Where userlands are cached: ``$EDGEPACK_ARM64_CACHE`` when set, else
    ``~/.cache/edgepack/arm64`` (under ``$XDG_CACHE_HOME`` when that is set)."""
    from edgepack.core.files import cache_dir

    return Path(os.environ.get(CACHE_ENV) or cache_dir() / "arm64")


def find_userland(cache_root=None) -> Userland | None:
    """The cached userland for this machine's versions, or None."""
    folder = Path(cache_root or default_cache_root()) / userland_key(*wanted_versions())
    info_file = folder / USERLAND_JSON
    if not info_file.is_file():
        return None
    return Userland(folder, json.loads(info_file.read_text(encoding="utf-8")))


def require_userland(cache_root=None) -> Userland:
    """The cached userland, or BadInput naming where it was looked for and how to build it."""
    found = find_userland(cache_root)
    if found is None:
        folder = Path(cache_root or default_cache_root()) / userland_key(*wanted_versions())
        raise BadInput(f"no arm64 userland at {folder}; {SETUP_HINT}")
    return found


def check_can_run(cache_root=None) -> None:
    """BadInput now, before any work, when the check could not run here: no qemu, or no
    cached userland and no way to build one (debootstrap, root)."""
    qemu_binary()
    if find_userland(cache_root) is None:
        _check_build_tools()


def _check_build_tools() -> tuple[Path, Path]:
    if platform.system() != "Linux":
        raise BadInput(f"building the arm64 userland needs Linux (this is {platform.system()})")
    qemu = qemu_binary()
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise BadInput("building the arm64 userland needs debootstrap, which is not on PATH; "
                       "install it: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise BadInput("building the arm64 userland needs root (debootstrap unpacks files "
                       "owned by root); run `edgepack env --setup-arm64` as root once, or "
                       "point XDG_CACHE_HOME at a userland someone built")
    return qemu, Path(debootstrap)


def _run(command: list[str], what: str, log) -> None:
    """Run a build step; a failure is BadInput with the step's last output line."""
    log(f"arm64 userland: {what}")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise BadInput(f"building the arm64 userland failed at {what} (exit "
                       f"{done.returncode}): {lines[-1][:300]}")


def _debootstrap(debootstrap: Path, root: Path, mirror: str, log) -> int:
    """First stage only, then every downloaded package unpacked; returns the package count."""
    _run([str(debootstrap), "--arch=arm64", "--variant=minbase", "--foreign",
          "--include=python3", SUITE, str(root), mirror],
         f"debootstrap --foreign {SUITE} (Debian's arm64 packages)", log)
    archives = sorted((root / "var/cache/apt/archives").glob("*.deb"))
    if not archives:
        raise BadInput(f"debootstrap downloaded no packages into {root}")
    log(f"arm64 userland: unpacking {len(archives)} packages with dpkg-deb -x")
    for deb in archives:
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}", lambda _: None)
        deb.unlink()        # the unpacked files are what is used; the archives are not
    if not (root / GUEST_PYTHON.lstrip("/")).exists():
        raise BadInput(f"the unpacked userland at {root} has no {GUEST_PYTHON}")
    for unused in UNUSED_FOLDERS:                  # documentation nothing here reads
        shutil.rmtree(root / unused, ignore_errors=True)
    return len(archives)


def _wheels(root: Path, onnxruntime_version: str, numpy_version: str, log) -> list[dict]:
    """Download the aarch64 wheels and unzip them into the guest's site folder."""
    import sys

    downloads = Path(tempfile.mkdtemp(prefix="wheels.", dir=root.parent))
    try:
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
              "--only-binary=:all:", *platforms, "--python-version", GUEST_PYTHON_VERSION,
              "--implementation", "cp", "--dest", str(downloads),
              f"onnxruntime=={onnxruntime_version}", f"numpy=={numpy_version}"],
             f"pip download onnxruntime=={onnxruntime_version} numpy=={numpy_version} "
             "(aarch64 wheels)", log)
        site = root / GUEST_SITE.lstrip("/")
        site.mkdir(parents=True, exist_ok=True)
        wheels = []
        for wheel in sorted(downloads.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
            wheels.append({"file": wheel.name, "sha256": sha256_file(wheel),
                           "size_bytes": wheel.stat().st_size})
        return wheels
    finally:
        shutil.rmtree(downloads, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    """Disk used by the files under ``folder`` (links not followed)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def build_userland(cache_root=None, mirror: str = MIRROR, log=print) -> Userland:
    """Build (or return the cached) arm64 userland for this machine's onnxruntime and numpy.

    Cold, it takes about a minute on a 2-core machine with a fast mirror; cached, no time.
    Raises BadInput when a tool, root or the network is missing, naming which.
    """
    cached = find_userland(cache_root)
    if cached is not None:
        return cached
    qemu, debootstrap = _check_build_tools()
    onnxruntime_version, numpy_version = wanted_versions()
    final = Path(cache_root or default_cache_root()) / userland_key(onnxruntime_version, numpy_version)
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    building = Path(tempfile.mkdtemp(prefix=f".{final.name}.building.", dir=final.parent))
    try:
        packages = _debootstrap(debootstrap, building / "root", mirror, log)
        wheels = _wheels(building / "root", onnxruntime_version, numpy_version, log)
        info = {"suite": SUITE, "mirror": mirror, "architecture": "arm64",
                "debian_packages": packages, "guest_python": GUEST_PYTHON,
                "guest_site": GUEST_SITE, "onnxruntime": onnxruntime_version,
                "numpy": numpy_version, "wheels": wheels, "qemu": qemu_version(qemu),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "setup_seconds": round(time.perf_counter() - started, 1),
                "disk_bytes": folder_bytes(building / "root")}
        (building / USERLAND_JSON).write_text(json.dumps(info, indent=1), encoding="utf-8")
        _publish(building, final)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    log(f"arm64 userland ready in {info['setup_seconds']} s at {final} "
        f"({info['disk_bytes'] / 1e6:.0f} MB)")
    return Userland(final, info)


def _publish(building: Path, final: Path) -> None:
    """Move the built folder into place in one rename (a concurrent build may have won)."""
    try:
        building.rename(final)
    except OSError:
        if not (final / USERLAND_JSON).is_file():
            raise


__all__ = ["SETUP_HINT", "Userland", "build_userland", "check_can_run", "default_cache_root", "find_userland", "qemu_binary",
           "qemu_version", "require_userland", "userland_key"]
