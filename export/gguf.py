"""A GGUF file (llama.cpp's format) -> a Hugging Face folder of fp32 safetensors, offline.

transformers reads GGUF itself (``from_pretrained(folder, gguf_file=...)``, with the ``gguf``
package): it de-quantizes every tensor to fp32. The file is checked first, so a bad one is
one line naming what is wrong instead of a traceback from inside the reader: the magic
bytes, an architecture transformers can load, and tensor types the ``gguf`` package can
de-quantize. The converted folder is cached (keyed by the file's sha256), because the
conversion takes tens of seconds and a recipe run or ``--resume`` needs it again.

GGUF holds no pickle: reading one runs no code.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import warnings
from collections import Counter
from pathlib import Path

from core.deps import import_optional
from core.files import sha256_file

GGUF_MAGIC = b"GGUF"
CONVERSION_VERSION = 1  # bump when the conversion changes, to retire old cached folders


def _readable_types() -> set[str]:
    quants = import_optional("gguf.quants", None, "gguf", "llm")
    return {"F32", "F16"} | {t.name for t in quants._type_traits}


def gguf_summary(path) -> dict:
    """Architecture, tensor count per type, and the types this machine cannot read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file (it does not start with the GGUF "
                             f"magic bytes)")
    reader_class = import_optional("gguf", "GGUFReader", "gguf", "llm")
    try:
        reader = reader_class(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged file, named as such
        raise ValueError(f"{path}: the GGUF reader could not parse it ({exc})") from exc
    field = reader.fields.get("general.architecture")
    architecture = bytes(field.parts[-1]).decode() if field is not None else ""
    types = Counter(t.tensor_type.name for t in reader.tensors)
    unreadable = sorted(set(types) - _readable_types())
    return {"architecture": architecture, "tensor_types": dict(types),
            "unsupported_types": unreadable}


def check_gguf(path) -> dict:
    """:func:`gguf_summary`, refusing what transformers cannot load (``ValueError``)."""
    summary = gguf_summary(path)
    if summary["unsupported_types"]:
        raise ValueError(f"{path}: tensor type {', '.join(summary['unsupported_types'])} is not "
                         f"supported (the gguf package de-quantizes "
                         f"{', '.join(sorted(_readable_types()))})")
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if summary["architecture"] not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ValueError(f"{path}: architecture {summary['architecture'] or '(none)'!r} is not "
                         f"one transformers loads from GGUF (it loads "
                         f"{', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})")
    return summary


def convert_gguf(path, folder) -> Path:
    """Load the GGUF at ``path`` into transformers (fp32) and save model, config and
    tokenizer into ``folder`` (safetensors)."""
    transformers = import_optional("transformers", None, "transformers", "hf")
    import_optional("accelerate", None, "accelerate", "llm")
    path = Path(path)
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the de-quantization progress bar and legacy notes
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent),
                                                               gguf_file=path.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent),
                                                                  gguf_file=path.name)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return Path(folder)


def cached_hf_folder(path, cache_root) -> Path:
    """The Hugging Face folder converted from the GGUF at ``path``, made once and kept under
    ``cache_root`` (by content hash); a half-written conversion is never used."""
    check_gguf(path)
    key = f"{sha256_file(path)[:16]}-v{CONVERSION_VERSION}"
    folder = Path(cache_root) / key
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
    try:
        convert_gguf(path, scratch)
        os.replace(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


__all__ = ["cached_hf_folder", "check_gguf", "convert_gguf", "gguf_summary"]
