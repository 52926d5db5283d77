"""Run folders: edgepack writes only into an empty folder or one of its own runs.

A finished run's ``manifest.json`` says ``"edgepack_run": true``; a run killed before its
manifest is recognised by its record of inputs (``inputs.json``, written when it starts) and
its stage folders (``NN-kind/config.json``, written when a stage starts). Any other non-empty
folder holds someone's files and is refused, ``--resume`` included, so a recipe or notes
beside it are never written over.

:func:`open_run_folder` is how a pipeline starts: the folder checked, locked for the whole run
(:mod:`edgepack.pipeline.run_lock`), checked again under the lock, and on ``--resume`` its
recorded inputs compared with this run's (:mod:`edgepack.pipeline.run_inputs`).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from edgepack.core.files import atomic_write_json, check_output_dir
from edgepack.pipeline.run_inputs import INPUTS_FILE, RUN_MARKER, check_same_inputs
from edgepack.pipeline.run_lock import LOCK_FILE, check_not_locked, lock_run_folder


REPORT_PLOTS = ("tradeoff.png", "robustness.png", "privacy.png")   # written before the manifest


MAX_JSON_BYTES = 64 << 20   # a manifest or record larger than this is not edgepack's


def _json_dict(path: Path) -> dict | None:
    """A JSON object from a regular file (a FIFO or device is never opened), else None."""
    try:
        found = path.lstat()
        if not stat.S_ISREG(found.st_mode) or found.st_size > MAX_JSON_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_edgepack_run(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an edgepack run: its manifest.json says so, or (a run killed
    before its manifest) it holds stage folders or a record of inputs marked as edgepack's,
    every entry is a stage folder, the teacher's, a hidden (scratch) one, the record or a
    report, and every stage folder holds edgepack's config.json."""
    folder = Path(folder)
    manifest = _json_dict(folder / "manifest.json")
    if manifest is not None:
        return manifest.get(RUN_MARKER) is True
    stages = [p for p in folder.iterdir() if p.is_dir() and p.name[:2].isdigit()]
    if not stages and (_json_dict(folder / INPUTS_FILE) or {}).get(RUN_MARKER) is not True:
        return False
    for stage in stages:
        if stage.name == "00-teacher":
            if any(p.name != "model.safetensors" and not p.name.startswith(".")
                   for p in stage.iterdir()):
                return False
            continue
        config = _json_dict(stage / "config.json") or {}   # written when a stage starts
        if "kind" not in config:
            return False
    allowed = ("report.json", "report.md", "recipe.toml", INPUTS_FILE, *REPORT_PLOTS)
    return all(p.name.startswith(".") or p in stages or p.name in allowed
               for p in folder.iterdir())


def is_new(folder: Path) -> bool:
    """Nothing in the folder yet (edgepack's lock file aside): a run starts afresh."""
    return not folder.exists() or all(p.name == LOCK_FILE for p in folder.iterdir())


def check_run_folder(folder: str | os.PathLike, resume: bool,
                     inputs: dict | None = None) -> Path:
    """A run folder is written only when it is new, empty, or (with ``resume``) an edgepack
    run that no other process is writing and, given this run's ``inputs``, that was made
    from the same ones; a folder holding anything else is the user's, and is refused.
    Nothing is created or changed."""
    folder = check_output_dir(folder)
    if folder.is_dir():
        check_not_locked(folder)
    if is_new(folder):
        return folder
    if not is_edgepack_run(folder):
        raise ValueError(f"output folder {folder} is not empty and does not hold an edgepack "
                         "run (no manifest.json marked edgepack_run, no stage folders); "
                         "edgepack writes only into an empty folder or its own run: choose "
                         "another --out")
    if not resume:
        raise ValueError(f"output folder {folder} holds an earlier edgepack run; pass --resume "
                         "to continue it, or choose another --out")
    if inputs is not None:
        check_same_inputs(folder, inputs)
    return folder


def open_run_folder(folder: str | os.PathLike, resume: bool, inputs: dict) -> Path:
    """Start writing a run: the folder checked, made, locked for this run, checked again
    under the lock (another run may have written it meanwhile), and, when new, given its
    record of ``inputs``; a resumed run must match the record already there."""
    folder = check_run_folder(folder, resume, inputs)
    folder.mkdir(parents=True, exist_ok=True)
    lock_run_folder(folder)
    check_run_folder(folder, resume, inputs)
    if is_new(folder):
        atomic_write_json(folder / INPUTS_FILE, inputs)
    return folder
