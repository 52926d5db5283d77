"""Run folders: edgepack writes only into an empty folder or one of its own runs.

A finished run's ``manifest.json`` says ``"edgepack_run": true``; a run killed before its
manifest is recognised by its stage folders (``NN-kind/config.json``, written when a stage
starts). Any other non-empty folder holds someone's files and is refused, ``--resume``
included, so a recipe or notes beside it are never written over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.files import check_output_dir

RUN_MARKER = "edgepack_run"          # manifest.json key of a run folder


REPORT_PLOTS = ("tradeoff.png", "robustness.png", "privacy.png")   # written before the manifest


def _json_dict(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_edgepack_run(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an edgepack run: its manifest.json says so, or (a run killed
    before its manifest) every entry is a stage folder, the teacher's, a hidden (scratch)
    folder or a report, and every stage folder holds edgepack's config.json."""
    folder = Path(folder)
    manifest = _json_dict(folder / "manifest.json")
    if manifest is not None:
        return manifest.get(RUN_MARKER) is True
    stages = [p for p in folder.iterdir() if p.is_dir() and p.name[:2].isdigit()]
    if not stages:
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
    allowed = ("report.json", "report.md", "recipe.toml", *REPORT_PLOTS)
    return all(p.name.startswith(".") or p in stages or p.name in allowed
               for p in folder.iterdir())


def check_run_folder(folder: str | os.PathLike, resume: bool) -> Path:
    """A run folder is written only when it is new, empty, or (with ``resume``) an edgepack
    run; a folder holding anything else is the user's, and is refused."""
    folder = check_output_dir(folder)
    if not folder.exists() or not any(folder.iterdir()):
        return folder
    if not is_edgepack_run(folder):
        raise ValueError(f"output folder {folder} is not empty and does not hold an edgepack "
                         "run (no manifest.json marked edgepack_run, no stage folders); "
                         "edgepack writes only into an empty folder or its own run: choose "
                         "another --out")
    if not resume:
        raise ValueError(f"output folder {folder} holds an earlier edgepack run; pass --resume "
                         "to continue it, or choose another --out")
    return folder
