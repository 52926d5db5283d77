"""A decoder LLM in ONNX Runtime, read by the ecosystem's names, with its KV cache.

Any decoder that follows the names of Optimum's ``text-generation-with-past`` export and
onnxruntime-genai (inputs ``input_ids``, ``attention_mask``, optionally ``position_ids``,
``past_key_values.{i}.key|value``; outputs ``logits``, ``present.{i}.key|value``) runs here,
whoever exported it. :class:`Decoder` is the one loop everything else uses: the export's
parity check, the language-model metrics, the generation benchmark and ``edgepack generate``.

Batch 1 throughout: the edge case, and what the generation figures are measured at.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edgepack.bench.session import SessionOptions, make_session
from edgepack.core.onnx_files import model_size_bytes

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class DecoderLayout:
    """What the graph's inputs and outputs say about the decoder."""

    layers: int
    kv_heads: int
    head_dim: int
    past_dtype: type
    has_position_ids: bool
    vocab_size: int | None     # from the logits' static last axis, when it is static


def _static(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def decoder_layout(session, path: str | os.PathLike = "the model") -> DecoderLayout:
    """Read the layout from a session's inputs and outputs; a graph without the decoder
    names (a model exported without ``-with-past``, an encoder) is a ``ValueError`` that
    names what was expected."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    past = {}
    for name, arg in inputs.items():
        match = _PAST.match(name)
        if match:
            past[(int(match.group(1)), match.group(2))] = arg
    missing = [n for n in ("input_ids", "attention_mask") if n not in inputs]
    if "logits" not in outputs:
        missing.append("output logits")
    layers = 1 + max((i for i, _ in past), default=-1)
    complete = layers > 0 and all((i, kind) in past and f"present.{i}.{kind}" in outputs
                                  for i in range(layers) for kind in ("key", "value"))
    if missing or not complete:
        found = ", ".join(sorted(inputs)) or "none"
        raise ValueError(
            f"{path} is not a decoder with a KV cache: expected inputs input_ids, "
            f"attention_mask, position_ids (optional) and past_key_values.N.key/value, with "
            f"outputs logits and present.N.key/value (Optimum's text-generation-with-past "
            f"export); its inputs are {found}")
    key = past[(0, "key")]
    shape = list(key.shape)
    if len(shape) == 4 and _static(shape[3]) is None:  # a symbolic head size: the configs
        shape[3] = head_size_from_configs(path)        # beside the model say it
    if len(shape) != 4 or _static(shape[1]) is None or _static(shape[3]) is None:
        raise ValueError(f"{path}: past_key_values.0.key has shape {shape}; expected "
                         f"(batch, kv_heads, past_length, head_dim) with fixed heads and "
                         f"head size")
    if key.type not in _NUMPY_TYPES:
        raise ValueError(f"{path}: past_key_values.0.key is {key.type}; expected float or "
                         f"float16")
    logits_shape = list(outputs["logits"].shape)
    vocab = _static(logits_shape[-1]) if logits_shape else None
    return DecoderLayout(layers, shape[1], shape[3], _NUMPY_TYPES[key.type],
                         "position_ids" in inputs, vocab)


def head_size_from_configs(model_path) -> int | None:
    """The attention head size from ``genai_config.json`` or ``config.json`` beside the model
    (onnxruntime-genai's builder leaves that cache axis symbolic in the graph), else None."""
    folder = Path(str(model_path)).parent
    for name, read in (("genai_config.json", lambda c: c["model"]["decoder"]["head_size"]),
                       ("config.json", lambda c: c.get("head_dim") or
                        c["hidden_size"] // c["num_attention_heads"])):
        try:
            value = read(json.loads((folder / name).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return None


# Where a transformers config keeps the longest sequence its positions cover, by family:
# most (max_position_embeddings), GPT-2 and its kin (n_positions, n_ctx), others (seq_length,
# max_sequence_length). The first one present wins.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length",
                "seq_length")


def context_from_config(config: dict) -> int | None:
    """The context length a ``config.json`` dict states, from whichever field its family uses
    (:data:`CONTEXT_KEYS`); None when none is a positive integer."""
    for key in CONTEXT_KEYS:
        value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def context_length(model_path: str | os.PathLike) -> int | None:
    """The longest sequence the model was trained for, from the ``config.json`` beside the
    model (Optimum copies it there; :func:`context_from_config`), or None when that file or
    field is missing or unreadable (the graph itself does not say)."""
    config = Path(model_path).parent / "config.json"
    try:
        return context_from_config(json.loads(config.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


class Decoder:
    """Greedy decoding and teacher-forced logits with the KV cache, through ONNX Runtime.

    ``context_length`` is the model's longest sequence when ``config.json`` beside it says
    (else None); ``vocab_size`` is the logits' width, read from the graph or, where that
    axis is dynamic, from one one-token run.
    """

    def __init__(self, path: str | os.PathLike, options: SessionOptions | None = None,
                 session=None):
        self.path = Path(path)
        self.session = session if session is not None else make_session(path, options)
        self.layout = decoder_layout(self.session, self.path)
        self._past_names = [f"past_key_values.{i}.{kind}" for i in range(self.layout.layers)
                            for kind in ("key", "value")]
        self._output_names = ["logits"] + [f"present.{i}.{kind}"
                                           for i in range(self.layout.layers)
                                           for kind in ("key", "value")]
        self.context_length = context_length(self.path)
        self._vocab_size = self.layout.vocab_size
        # The RSS its loading cost, when edgepack.bench.generation.load_decoder made it; else None.
        self.load_memory: dict | None = None

    @property
    def vocab_size(self) -> int:
        """The number of logits per token (the model's vocabulary)."""
        if self._vocab_size is None:
            self._vocab_size = int(self.sequence_logits([0]).shape[-1])
        return self._vocab_size

    def size_bytes(self) -> int:
        """The model's bytes on disk: the .onnx file and its external data."""
        return model_size_bytes(self.path)

    def empty_cache(self) -> list[np.ndarray]:
        """The cache before any token: every key and value with a past length of 0."""
        shape = (1, self.layout.kv_heads, 0, self.layout.head_dim)
        return [np.zeros(shape, self.layout.past_dtype) for _ in self._past_names]

    def forward(self, token_ids, cache: list[np.ndarray]) -> tuple[np.ndarray, list]:
        """Run ``token_ids`` (a 1-D sequence) after the tokens already in ``cache``: the
        logits (one row per new token, float32) and the grown cache."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)
        past = cache[0].shape[2]
        total = past + ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64)}
        if self.layout.has_position_ids:
            feeds["position_ids"] = np.arange(past, total, dtype=np.int64).reshape(1, -1)
        feeds.update(zip(self._past_names, cache))
        results = self.session.run(self._output_names, feeds)
        return results[0][0].astype(np.float32, copy=False), results[1:]

    def sequence_logits(self, token_ids) -> np.ndarray:
        """Teacher-forced logits of a whole sequence in one prefill: row ``t`` predicts
        token ``t + 1``."""
        logits, _ = self.forward(token_ids, self.empty_cache())
        return logits

    def check_logits(self, logits: np.ndarray, step: int) -> None:
        """Refuse logits holding NaN or Inf (:class:`~edgepack.core.errors.CheckFailed`, exit 1): the
        argmax of NaN is token 0, so generation would go on printing garbage. ``step``: 0 for
        the prompt's prefill, ``n`` for the ``n``-th generated token."""
        if not np.isfinite(logits).all():
            from edgepack.core.errors import CheckFailed

            where = "on the prompt" if step == 0 else f"at generated token {step}"
            raise CheckFailed(f"{self.path}: its output 'logits' holds NaN or Inf {where}; "
                              f"the model computes no numbers (broken or overflowing weights, "
                              f"or a quantization that lost them)")

    def greedy(self, prompt_ids, max_new_tokens: int, eos_ids: tuple[int, ...] = (),
               check_logits: bool = False) -> Iterator[int]:
        """Greedy continuation of ``prompt_ids``, one token at a time (a generator, so a
        caller can stream it); stops after ``max_new_tokens`` or at an ``eos_ids`` token.
        ``check_logits``: refuse NaN or Inf logits (:meth:`check_logits`) at every step."""
        if len(prompt_ids) == 0:
            raise ValueError("the prompt is empty: greedy decoding needs at least one token")
        logits, cache = self.forward(prompt_ids, self.empty_cache())
        for step in range(max_new_tokens):
            if check_logits:
                self.check_logits(logits[-1], step)
            token = int(np.argmax(logits[-1]))
            yield token
            if token in eos_ids:
                return
            logits, cache = self.forward([token], cache)


__all__ = ["CONTEXT_KEYS", "Decoder", "DecoderLayout", "context_from_config", "context_length",
           "decoder_layout"]
