"""What a run was made from, recorded in its folder and checked by ``--resume``.

``inputs.json`` is written when a run starts, once its folder is locked: the resolved recipe,
the size and sha256 of every file the recipe's ``[model]`` and ``[data]`` tables name (a
weights file, a model folder's files, a data file), and the sha256 of the teacher's tensors
as built (which also covers a builder's code and a cached, trained teacher).

``--resume`` continues *the same run*. It computes the same record again and refuses the
first difference with exit 2, naming the recipe key or the file, before anything is written.
Every difference is refused, thresholds included: a ``[metric]`` threshold or ``tolerance``
does not only decide a verdict, it decides which candidate a quantize search keeps and so
what every later stage starts from, so no stage of the earlier run could stand unchecked.
A changed recipe is a new run: put the recipe back, or choose another ``--out``. A run
called through the Python API without a recipe records its stage configs and teacher.
"""

from __future__ import annotations

import functools
import hashlib
import json
import stat
from pathlib import Path

from edgepack.core.files import sha256_file

INPUTS_FILE = "inputs.json"
RUN_MARKER = "edgepack_run"
NAMED_TABLES = ("model", "data")     # the recipe tables whose string values may name files
MAX_RECORD_BYTES = 64 << 20


def _plain(value):
    """``value`` as JSON gives it back (tuples as lists; a TOML date as its text)."""
    return json.loads(json.dumps(value, default=str))


def recipe_settings(recipe, stages) -> dict:
    """The resolved recipe as data; without a recipe (an API call), the stage configs."""
    if recipe is not None:
        return _plain(recipe.to_dict())
    return _plain({"stages": [stage.to_dict() for stage in stages]})


def _strings(value, key: str):
    """``(dotted key, text)`` for every string inside a table's values."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(item, f"{key}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _strings(item, f"{key}[{index}]")


def _existing(text: str, base_dir: Path | None) -> Path | None:
    """The file or folder ``text`` names (the recipe's folder first, then as given)."""
    if not text or len(text) > 4096:
        return None
    candidates = [Path(text)] if Path(text).is_absolute() or base_dir is None else \
        [base_dir / text, Path(text)]
    for path in candidates:
        try:
            if path.is_file() or path.is_dir():
                return path.resolve()
        except (OSError, ValueError):   # a name too long, a NUL byte: not a path
            continue
    return None


def _regular_files(path: Path) -> list[Path]:
    """A file itself; a folder's regular, visible files (not its subfolders)."""
    if path.is_file():
        return [path]
    try:
        return sorted(p for p in path.iterdir() if not p.name.startswith(".")
                      and p.is_file() and not p.is_symlink())
    except OSError:
        return []


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """sha256 of one file, once per process for an unchanged file (the early check and the
    run's record hash the same files)."""
    return sha256_file(path)


def file_entry(path: Path) -> dict:
    """Size and sha256 of one file."""
    stat = path.stat()
    return {"size_bytes": stat.st_size,
            "sha256": _digest(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)}


def named_files(recipe) -> dict[str, dict]:
    """``{where: {"path", "size_bytes", "sha256"}}`` for every file the recipe's ``[model]``
    and ``[data]`` values name: ``where`` is the recipe key (``model.weights``), or the key
    and the file's name for a named folder's files (``model.args.folder/model.safetensors``),
    so a run and its recipe folder can be moved and still resumed."""
    if recipe is None:
        return {}
    found: dict[str, dict] = {}
    settings = recipe.to_dict()
    for table in NAMED_TABLES:
        for key, text in _strings(settings.get(table, {}), table):
            path = _existing(text, getattr(recipe, "base_dir", None))
            if path is None:
                continue
            for file in _regular_files(path):
                where = key if file == path else f"{key}/{file.name}"
                found[where] = {"path": str(file), **file_entry(file)}
    return found


def module_sha256(model) -> str:
    """sha256 of a torch module's tensors (names, dtypes, shapes and bytes, in name order)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not isinstance(tensor, torch.Tensor) or tensor.is_meta:
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{list(tensor.shape)}|".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


def run_inputs(recipe, stages, teacher=None) -> dict:
    """The record of what a run is made from (the teacher's part only when one is given)."""
    record = {RUN_MARKER: True, "recipe": recipe_settings(recipe, stages),
              "files": named_files(recipe)}
    if teacher is not None:
        record["teacher_sha256"] = module_sha256(teacher)
    return record


def recipe_inputs(recipe) -> dict:
    """The part of the record known before the teacher is built: checked first, so a
    changed recipe is refused before any training or loading."""
    return run_inputs(recipe, recipe.stages)


def _flat(value, key: str = "") -> dict:
    """Dotted keys to leaf values; lists of tables by index (``stages[1].mode``), other
    lists whole; an empty table has no leaves (so a key is named, not its table)."""
    if isinstance(value, dict):
        flat = {}
        for name, item in value.items():
            flat.update(_flat(item, f"{key}.{name}" if key else str(name)))
        return flat
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        flat = {}
        for index, item in enumerate(value):
            flat.update(_flat(item, f"{key}[{index}]"))
        return flat
    return {key: value}


ABSENT = object()


def _shown(value) -> str:
    text = "(absent)" if value is ABSENT else json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def recipe_difference(before: dict, now: dict) -> str | None:
    """The first recipe key whose value changed, in words (None: the same recipe)."""
    old, new = _flat(before), _flat(now)
    changed = [k for k in list(old) + [k for k in new if k not in old]
               if old.get(k, ABSENT) != new.get(k, ABSENT)]
    if not changed:
        return None
    key = changed[0]
    more = f" (and {len(changed) - 1} more key{'s' * (len(changed) > 2)})" \
        if len(changed) > 1 else ""
    return (f"recipe key {key} was {_shown(old.get(key, ABSENT))}, now "
            f"{_shown(new.get(key, ABSENT))}{more}")


def files_difference(before: dict, now: dict) -> str | None:
    """The first named file that is new, gone or changed, in words (None: all the same)."""
    for where, entry in before.items():
        got = now.get(where)
        if not isinstance(entry, dict):
            entry = {}
        if got is None:
            return f"file {entry.get('path')} ({where}) is gone"
        if got["size_bytes"] != entry.get("size_bytes"):
            return (f"file {got['path']} ({where}) changed: {entry.get('size_bytes')} bytes, "
                    f"now {got['size_bytes']}")
        if got["sha256"] != entry.get("sha256"):
            return f"file {got['path']} ({where}) changed: its sha256 differs"
    for where, entry in now.items():
        if where not in before:
            return f"file {entry['path']} ({where}) is new"
    return None


def inputs_difference(recorded: dict, current: dict) -> str | None:
    """What changed between a run's record and now: recipe, then files, then teacher."""
    found = recipe_difference(recorded.get("recipe") or {}, current["recipe"])
    if found is None:
        found = files_difference(recorded.get("files") or {}, current["files"])
    if found is None and "teacher_sha256" in current and \
            recorded.get("teacher_sha256") != current["teacher_sha256"]:
        found = ("the teacher's weights differ (sha256 of its tensors): its weights, "
                 "builder or training changed")
    return found


def read_recorded(folder: Path) -> dict:
    """The folder's ``inputs.json``; a run without a readable one cannot be resumed."""
    path = folder / INPUTS_FILE
    try:
        found = path.lstat()
    except OSError:
        found = None
    if found is None:
        why = "is missing"
    elif not stat.S_ISREG(found.st_mode) or found.st_size > MAX_RECORD_BYTES:
        why = "is not a regular file of a record's size"
    else:
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict) and recorded.get(RUN_MARKER) is True and \
                isinstance(recorded.get("recipe"), dict) and \
                isinstance(recorded.get("files", {}), dict):
            return recorded
        why = "cannot be read as edgepack's record"
    raise ValueError(f"--resume: {path} {why}: it records the recipe and inputs the run in "
                     f"{folder} was made with, so this run cannot be checked to continue "
                     "it; choose another --out")


def check_same_inputs(folder: Path, current: dict) -> None:
    """Refuse to resume ``folder`` with other inputs than it was made with (exit 2)."""
    found = inputs_difference(read_recorded(folder), current)
    if found is not None:
        raise ValueError(f"--resume: {folder} was made from other inputs: {found}; --resume "
                         "continues the same run: restore them, or choose another --out")
