"""A GGUF file (llama.cpp's format) -> a Hugging Face folder of fp32 safetensors, offline.

transformers reads GGUF itself (``from_pretrained(folder, gguf_file=...)``, with the ``gguf``
package): it de-quantizes every tensor to fp32. The file is checked first, so a bad one is
one line naming what is wrong instead of a traceback (or a memory bomb) from inside the
reader: its header, every count and size checked against the file (:mod:`edgepack.export.gguf_header`),
an architecture transformers loads as a decoder, tensor types the ``gguf`` package can
de-quantize, and tensors that fit the model the metadata describes
(:mod:`edgepack.export.gguf_model`). The converted folder is cached (keyed by the file's sha256,
verified against its manifest before each use), because the conversion takes tens of seconds
and a recipe run or ``--resume`` needs it again.

GGUF holds no pickle: reading one runs no code.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from pathlib import Path

from edgepack.core.cache_entry import new_entry, open_entry
from edgepack.core.deps import import_optional
from edgepack.core.files import sha256_file
from edgepack.export.gguf_header import GgufHeader, read_gguf_header
from edgepack.export.gguf_model import check_gguf_model

CONVERSION_VERSION = 1  # bump when the conversion changes, to retire old cached folders


def _readable_types() -> set[str]:
    quants = import_optional("gguf.quants", None, "gguf", "llm")
    return {"F32", "F16"} | {t.name for t in quants._type_traits}


def _summary(header: GgufHeader) -> dict:
    types = Counter(t.type_name for t in header.tensors)
    return {"architecture": header.architecture, "tensor_types": dict(types),
            "unsupported_types": sorted(set(types) - _readable_types())}


def gguf_summary(path) -> dict:
    """Architecture, tensor count per type, and the types this machine cannot read, from
    the header alone (read with bounded reads: :mod:`edgepack.export.gguf_header`)."""
    return _summary(read_gguf_header(path))


def check_gguf(path) -> dict:
    """:func:`gguf_summary`, refusing what transformers cannot load (``ValueError``): tensor
    types it cannot de-quantize, an architecture it does not know, and a model whose
    metadata and tensors disagree or would not fit in memory (:mod:`edgepack.export.gguf_model`)."""
    header = read_gguf_header(path)
    summary = _summary(header)
    if summary["unsupported_types"]:
        raise ValueError(f"{path}: tensor type {', '.join(summary['unsupported_types'])} is not "
                         f"supported (the gguf package de-quantizes "
                         f"{', '.join(sorted(_readable_types()))})")
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if summary["architecture"] not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ValueError(f"{path}: architecture {summary['architecture'] or '(none)'!r} is not "
                         f"one transformers loads from GGUF (it loads "
                         f"{', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})")
    summary.update(check_gguf_model(header))
    return summary


def _gguf_tokenizer(transformers, path: Path):
    """The tokenizer transformers builds from the file's ``tokenizer.ggml.*`` metadata; a
    vocabulary it cannot build (merges of tokens it lacks, no scores for a SentencePiece
    model) is the file's fault, said in one line naming it."""
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # the checks above passed: what is left is the vocabulary
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ValueError(f"{path}: its tokenizer metadata (tokenizer.ggml.*) does not make a "
                         f"tokenizer ({type(exc).__name__}: {text})") from exc


def convert_gguf(path, folder) -> Path:
    """Load the GGUF at ``path`` into transformers (fp32) and save model, config and
    tokenizer into ``folder`` (safetensors)."""
    transformers = import_optional("transformers", None, "transformers", "hf")
    import_optional("accelerate", None, "accelerate", "llm")
    path = Path(path)
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the de-quantization progress bar and legacy notes
        tokenizer = _gguf_tokenizer(transformers, path)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent),
                                                                  gguf_file=path.name)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return Path(folder)


def cached_hf_folder(path, cache_root) -> Path:
    """The Hugging Face folder converted from the GGUF at ``path``, made once and kept under
    ``cache_root`` (by content hash). The entry is verified before each use against the
    manifest written with it (:mod:`edgepack.core.cache_entry`): a truncated, swapped or half-made
    entry is converted again, with one line on stderr saying so."""
    check_gguf(path)
    digest = sha256_file(path)
    folder = Path(cache_root) / f"{digest[:16]}-v{CONVERSION_VERSION}"
    source = {"gguf_sha256": digest, "conversion_version": CONVERSION_VERSION}
    if open_entry(folder, source, f"{Path(path).name} converted to fp32") is not None:
        return folder
    with new_entry(folder, source) as scratch:
        convert_gguf(path, scratch)
    return folder


__all__ = ["cached_hf_folder", "check_gguf", "convert_gguf", "gguf_summary"]
