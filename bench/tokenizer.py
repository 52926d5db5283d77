"""A decoder's tokenizer, read from its folder with the ``tokenizers`` library alone.

``tokenizer.json`` is the one file every Hugging Face text model ships, and what Optimum and
onnxruntime-genai copy beside an ONNX export; reading it with ``tokenizers`` needs neither
transformers nor torch. The special ids come from the files beside it, the way transformers'
``generate`` picks them: ``generation_config.json`` first, then ``config.json``, then
``tokenizer_config.json``'s token names.

A tokenizer and a model disagree silently when they are not a pair (ids past the embedding
table, text decoded with the wrong table), so :func:`check_vocabulary` compares the two sizes.
:class:`TextStream` turns a stream of token ids into printable text, a multi-byte character
split over several tokens printed once it is whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

# A model's logits may be wider than its tokenizer (embedding tables are padded to a multiple
# of 64 or 128: Qwen2.5 151,936 logits for 151,665 tokens, Phi-3 32,064 for 32,011). A
# tokenizer covering less than this share of the logits is some other model's.
MIN_VOCAB_COVERAGE = 0.9


@dataclass
class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the special ids of the model it belongs to."""

    tokenizer: object            # tokenizers.Tokenizer
    folder: Path
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer can produce (its table plus added tokens)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def largest_id(self) -> int:
        """The largest id the tokenizer can produce: a table with holes (a WordLevel
        vocabulary numbered from 5000, say) has ids far beyond its size."""
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)

    @property
    def path(self) -> Path:
        """The ``tokenizer.json`` file, for messages."""
        return self.folder / "tokenizer.json"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, with whatever special tokens ``tokenizer.json``'s own
        post-processor adds (nothing is added here)."""
        return self.tokenizer.encode(text).ids

    def decode(self, ids) -> str:
        """Text of ``ids``, special tokens (bos, eos, ...) left out."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; {} when the file is missing; a ValueError naming the file
    when it is not a JSON object."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}; expected an object")
    return data


def _ids(value) -> list[int]:
    """An ``*_token_id`` entry as a list: configs write one int, a list, or null."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _token_id(tokenizer, token) -> list[int]:
    """The id of a ``tokenizer_config.json`` token entry (a string or ``{"content": ...}``)."""
    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str):
        return []
    found = tokenizer.token_to_id(token)
    return [] if found is None else [found]


def special_ids(tokenizer, folder: Path, kind: str) -> list[int]:
    """``kind`` ("bos" or "eos") ids of the model in ``folder``: the first of
    generation_config.json, config.json and tokenizer_config.json that names one."""
    for name in ("generation_config.json", "config.json"):
        ids = _ids(_read_json(folder / name).get(f"{kind}_token_id"))
        if ids:
            return ids
    return _token_id(tokenizer, _read_json(folder / "tokenizer_config.json").get(f"{kind}_token"))


def load_tokenizer(folder: str | os.PathLike) -> TextTokenizer:
    """The tokenizer in ``folder`` (its ``tokenizer.json``) with its bos and eos ids."""
    from tokenizers import Tokenizer

    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not folder.is_dir():
        raise ValueError(f"tokenizer folder {folder} does not exist; expected a folder holding "
                         f"tokenizer.json (a Hugging Face model folder)")
    if not path.is_file():
        raise ValueError(f"{folder} holds no tokenizer.json; expected the Hugging Face "
                         f"tokenizer file (with tokenizer_config.json) of the model")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust library raises its own Exception type
        raise ValueError(f"{path} is not a tokenizers file: {str(exc).splitlines()[0]}") from exc
    bos = special_ids(tokenizer, folder, "bos")
    return TextTokenizer(tokenizer, folder, bos_id=bos[0] if bos else None,
                         eos_ids=tuple(special_ids(tokenizer, folder, "eos")))


def check_vocabulary(tokenizer: TextTokenizer, logits_width: int,
                     model: str | os.PathLike = "the model") -> None:
    """Refuse a tokenizer that is not the model's: one whose ids reach past the model's
    vocabulary (its logits' width; such an id indexes past the embedding table: ONNX Runtime
    fails, or reads garbage), or one covering under :data:`MIN_VOCAB_COVERAGE` of the logits
    (a smaller, other model's table; a little smaller is normal, tables are padded)."""
    size, largest = tokenizer.vocab_size, tokenizer.largest_id
    if largest >= logits_width:
        raise ValueError(f"the tokenizer {tokenizer.path} has {size:,} tokens with ids up to "
                         f"{largest:,}, but {model} has a vocabulary of {logits_width:,} "
                         f"(ids 0 to {logits_width - 1:,}): they are not a pair (its ids would "
                         f"index past the model's embedding table); give the model's own "
                         f"tokenizer folder")
    if size < MIN_VOCAB_COVERAGE * logits_width:
        raise ValueError(f"the tokenizer {tokenizer.path} has {size:,} tokens but {model} "
                         f"has a vocabulary of {logits_width:,} (under "
                         f"{MIN_VOCAB_COVERAGE:.0%} of it): they are not a pair; give the "
                         f"model's own tokenizer folder")


class TextStream:
    """Text of a growing token sequence, handed out as new suffixes for streaming.

    Each :meth:`add` decodes the prompt and every token so far and returns the text not
    returned yet. Decoding the whole sequence, not the one new token, is what prints right:
    a character of several bytes split over tokens, or a SentencePiece word whose leading
    space only shows after other text. While the text ends in an incomplete character
    (U+FFFD) nothing is returned; :meth:`finish` returns whatever is left.
    """

    def __init__(self, tokenizer: TextTokenizer, prompt_ids=()):
        self.tokenizer = tokenizer
        self.ids = [int(i) for i in prompt_ids]
        self.printed = len(tokenizer.decode(self.ids))

    def _new_text(self, final: bool) -> str:
        text = self.tokenizer.decode(self.ids)
        if not final and text.endswith("\ufffd"):
            return ""
        new, self.printed = text[self.printed:], max(self.printed, len(text))
        return new

    def add(self, token_id: int) -> str:
        """Append one token; the new printable text (maybe empty)."""
        self.ids.append(int(token_id))
        return self._new_text(final=False)

    def finish(self) -> str:
        """The text still held back (an incomplete character at the very end)."""
        return self._new_text(final=True)


__all__ = ["MIN_VOCAB_COVERAGE", "TextStream", "TextTokenizer", "check_vocabulary",
           "load_tokenizer", "special_ids"]
