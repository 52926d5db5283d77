"""One check for every output path: a user's file is never written over.

Every path a command writes (``-o``, ``--keep-failed``, ``--json``, ``--markdown``, ``--plot``)
passes :func:`check_output_path` before any work starts:

- it is not one of the command's inputs (nor a link to one);
- it ends in the suffix its kind of file takes (``.onnx``, ``.json``, ``.md``, ``.png``);
- if it exists, edgepack wrote it; otherwise it is refused unless the user passes
  ``--overwrite``.

edgepack recognises its own files by a mark each of them carries (:data:`MARK`): an ONNX
``metadata_props`` entry, a key of a JSON object (every object of a JSON list), a first-line
Markdown comment, a PNG text chunk. Folders follow the same rule (:func:`check_output_folder`):
empty, missing, or holding what ``is_own`` says edgepack wrote there.

Example::

    out = check_output_path(args.output, inputs=[args.model], flag="-o/--output",
                            suffixes=(".onnx",), overwrite=args.overwrite)
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Callable, Iterable

from edgepack.core.files import check_not_input, check_output_dir, check_output_file

MARK = "edgepack"                           # the key every mark uses
MARKDOWN_MARK = "<!-- written by edgepack -->"
JSON_MARK = "edgepack_version"              # report.json and each bench result carry it
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_metadata(what: str) -> dict:
    """``savefig(metadata=...)`` for a PNG edgepack writes: a text chunk that marks it."""
    return {MARK: what}


def _onnx_is_own(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not an ONNX file at all: certainly not ours
        return False
    return any(prop.key == MARK for prop in model.metadata_props)


def _json_is_own(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if isinstance(data, dict):
        return JSON_MARK in data or data.get("edgepack_package") is True
    return isinstance(data, list) and bool(data) and all(
        isinstance(item, dict) and JSON_MARK in item for item in data)


def _markdown_is_own(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().strip() == MARKDOWN_MARK
    except (OSError, ValueError):
        return False


def _png_is_own(path: Path) -> bool:
    """Whether a PNG holds a ``tEXt`` chunk keyed :data:`MARK` (read chunk by chunk)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != PNG_SIGNATURE:
                return False
            while True:
                header = handle.read(8)
                if len(header) < 8:
                    return False
                length, kind = struct.unpack(">I4s", header)
                if kind == b"tEXt":
                    keyword = handle.read(length).split(b"\x00", 1)[0]
                    if keyword == MARK.encode():
                        return True
                    handle.seek(4, os.SEEK_CUR)
                elif kind == b"IEND":
                    return False
                else:
                    handle.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return False


_RECOGNISERS: dict[str, Callable[[Path], bool]] = {
    ".onnx": _onnx_is_own, ".json": _json_is_own, ".md": _markdown_is_own,
    ".png": _png_is_own,
}


def written_by_edgepack(path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` carries edgepack's mark (any other file is the user's)."""
    path = Path(path)
    recognise = _RECOGNISERS.get(path.suffix.lower())
    return bool(recognise and path.is_file() and recognise(path))


def check_suffix(path: Path, suffixes: Iterable[str], flag: str) -> None:
    suffixes = tuple(suffixes)
    if suffixes and path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {path} must end in {' or '.join(suffixes)}; choose a path "
                         "with that suffix")


def check_output_path(path: str | os.PathLike, *, inputs: Iterable = (), flag: str = "output",
                      suffixes: Iterable[str] = (), overwrite: bool = False) -> Path:
    """The one check every output file passes before any work starts (see the module)."""
    path = check_output_file(path)
    check_not_input(path, [p for p in inputs if p], flag)
    check_suffix(path, suffixes, flag)
    if path.exists() and not overwrite and not written_by_edgepack(path):
        raise ValueError(f"{flag} {path} is an existing file that edgepack did not write; "
                         "choose another path, or pass --overwrite to replace it")
    return path


def check_onnx_output(path: str | os.PathLike, *, inputs: Iterable = (), flag: str = "output",
                      overwrite: bool = False) -> Path:
    """:func:`check_output_path` for an ``.onnx`` file, and for the ``<name>.data`` file of
    its weights that an export may write beside it: that one may be replaced only with the
    model edgepack wrote there (or with ``--overwrite``)."""
    path = check_output_path(path, inputs=inputs, flag=flag, suffixes=(".onnx",),
                             overwrite=overwrite)
    data = path.with_name(path.name + ".data")
    check_not_input(data, [p for p in inputs if p], flag)
    if data.exists() and not overwrite and not written_by_edgepack(path):
        raise ValueError(f"{flag} {path}: its weights file {data.name} exists beside it and "
                         "edgepack did not write it; choose another path, or pass "
                         "--overwrite to replace it")
    return path


def check_distinct(paths: dict[str, object]) -> None:
    """Two outputs of one command may not be the same file (``{flag: path}``)."""
    from edgepack.core.files import same_file

    given = [(flag, path) for flag, path in paths.items() if path]
    for i, (flag, path) in enumerate(given):
        for other_flag, other in given[i + 1:]:
            if same_file(path, other):
                raise ValueError(f"{flag} and {other_flag} are the same file ({path}); give "
                                 "each output a path of its own")


def check_output_folder(path: str | os.PathLike, *, flag: str = "-o/--output",
                        is_own: Callable[[Path], bool],
                        what: str = "an edgepack output folder") -> Path:
    """An output folder must be missing, empty, or one ``is_own`` recognises: never a
    folder of the user's files (the caller checks its file names against its inputs)."""
    path = check_output_dir(path)
    if path.exists() and any(path.iterdir()) and not is_own(path):
        raise ValueError(f"{flag} {path} is a folder that holds other files and is not "
                         f"{what}; choose a new or empty folder")
    return path


def mark_onnx(model, what: str) -> None:
    """Mark an ONNX model as edgepack's (``metadata_props``: ``edgepack = what``)."""
    for prop in model.metadata_props:
        if prop.key == MARK:
            prop.value = what
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = MARK, what


def mark_onnx_file(path: str | os.PathLike, what: str) -> None:
    """Mark the ONNX file at ``path`` in place (its external data files are left as they
    are: the graph is read and written without them)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    mark_onnx(model, what)
    onnx.save(model, str(path))
