"""Check a run folder against its manifest: every artifact re-hashed, each difference named.

A run folder copied to a device or a server can be trusted when every file listed in its
``manifest.json`` is still there with the same sha256 and no other file has appeared (hidden
files, such as a scratch folder, are not part of a run and are not listed).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.files import sha256_file
from edgepack.pipeline.run_folder import RUN_MARKER


def listed_files(folder: Path) -> set[str]:
    """The run's files as the manifest lists them: relative paths, hidden ones left out."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and p.name != "manifest.json"
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def read_manifest(folder: Path) -> dict[str, str]:
    """The manifest's ``files`` table; a folder without an edgepack manifest is refused."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; expected an edgepack run folder")
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{folder} has no manifest.json: not a finished edgepack run") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read as JSON ({type(exc).__name__})") from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get(RUN_MARKER) is not True or \
            not isinstance(files, dict):
        raise ValueError(f"{path} is not an edgepack run manifest (expected "
                         f"\"{RUN_MARKER}\": true and a files table)")
    return files


def verify_run(folder) -> dict[str, list[str]]:
    """``{"changed", "missing", "extra"}``: the files that differ from the manifest."""
    folder = Path(folder)
    expected = read_manifest(folder)
    present = listed_files(folder)
    changed = sorted(name for name in expected if name in present
                     and sha256_file(folder / name) != expected[name])
    return {"changed": changed,
            "missing": sorted(name for name in expected if name not in present),
            "extra": sorted(present - set(expected))}
