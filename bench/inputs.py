"""Inputs for a session: generated from the declared types, or read from ``.npz`` and checked.

Data on the command line is ``.npz``: one array per model input name, plus optional
``labels`` (class ids) or ``reference`` (expected outputs, e.g. fp32 embeddings). Every array
is checked against the session's declared inputs: name, rank, dtype and fixed dimensions, so a
wrong file fails with one line naming the input and the expected shape and type.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from edgepack.core.checks import did_you_mean

ORT_TO_NUMPY = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}
RESERVED_KEYS = ("labels", "reference")
# Generated token ids span the model's own embedding table when it is known (the low ids of
# a real vocabulary are special and unused tokens: a sequence of them is no text at all, and
# an output check on it says little); below this bound otherwise, a range every table has.
TOKEN_VOCAB = 1000


def parse_shape_overrides(items) -> dict[str, list[int]]:
    """Parse ``["input_ids=1,128", ...]`` into ``{"input_ids": [1, 128]}``."""
    overrides: dict[str, list[int]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            values = [int(d) for d in dims.split(",")] if sep else []
        except ValueError:
            values = []
        if not name or not values or any(v < 1 for v in values):
            raise ValueError(f"--shape {item!r} is not valid; expected NAME=D1,D2,... with "
                             "positive integers, e.g. input_ids=1,128")
        overrides[name] = values
    return overrides


def check_shape_overrides(session, overrides: dict[str, list[int]]) -> None:
    """Every ``--shape NAME=...`` must name an input of the model."""
    names = [i.name for i in session.get_inputs()]
    for name in overrides:
        if name not in names:
            raise ValueError(f"--shape {name}=...: the model has no input {name!r}"
                             f"{did_you_mean(name, names)}; "
                             f"its inputs are {', '.join(names)}")


def _default_dim(name: str, axis: int, rank: int) -> int:
    """A size for a symbolic non-batch dimension: sequences 128, images 224, else 1."""
    lowered = name.lower()
    if "seq" in lowered or "len" in lowered or rank == 2:
        return 128
    if rank == 4 and axis >= 2:
        return 224
    return 1


def resolve_shape(inp, batch: int, overrides: dict[str, list[int]],
                  symbolic_dims: int | None = None) -> list[int]:
    """A concrete shape for a declared input: ``--shape`` first, else batch and defaults
    (``symbolic_dims``: the size of every symbolic non-batch axis, instead of the defaults).

    A fixed batch dimension that differs from ``batch``, or an override whose first
    dimension differs from it, is an error: the result would record a batch that did not run.
    """
    declared = list(inp.shape)
    shown = ",".join(map(str, overrides.get(inp.name, [])))
    if inp.name in overrides:
        shape = overrides[inp.name]
        if len(shape) != len(declared):
            raise ValueError(f"--shape {inp.name}={shown} has rank {len(shape)}; input "
                             f"{inp.name!r} has rank {len(declared)} (declared {declared})")
        for want, have in zip(declared, shape):
            if isinstance(want, int) and want > 0 and want != have:
                raise ValueError(f"--shape {inp.name}={shown} does not fit the declared "
                                 f"shape {declared} of input {inp.name!r}")
        if declared and shape[0] != batch and not _is_fixed(declared[0]):
            raise ValueError(f"--shape {inp.name}={shown} sets batch {shape[0]} but the batch "
                             f"is {batch}; make --batch and the first dimension agree")
        return list(shape)
    if declared and _is_fixed(declared[0]) and declared[0] != batch and batch != 1:
        raise ValueError(f"input {inp.name!r} has a fixed batch dimension {declared[0]} "
                         f"(declared {declared}); batch {batch} cannot run on it")
    shape = []
    for axis, dim in enumerate(declared):
        if _is_fixed(dim):
            shape.append(dim)
        elif axis == 0:
            shape.append(batch)
        else:
            shape.append(symbolic_dims or _default_dim(str(dim), axis, len(declared)))
    return shape


def _is_fixed(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def token_vocab_sizes(model) -> dict[str, int]:
    """Inputs used as ``Gather`` indices into a constant table, and that table's row count.

    Generated token ids must stay below the embedding table's size, or ONNX Runtime fails
    with an index error; a model's own table says how large the vocabulary is.
    """
    tables = {t.name: int(t.dims[0]) for t in model.graph.initializer if len(t.dims) >= 1}
    # A quantized model gathers from the table's DequantizeLinear output, not the table.
    tables.update({n.output[0]: tables[n.input[0]] for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input and n.input[0] in tables})
    inputs = {i.name for i in model.graph.input}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    sizes: dict[str, int] = {}
    pairs = [(n.input[0], n.input[1]) for n in model.graph.node
             if n.op_type == "Gather" and len(n.input) >= 2]
    # ORT's fused BERT embedding: (input_ids, segment_ids, word table, position, segment table)
    pairs += [(n.input[table], n.input[ids]) for n in model.graph.node
              if n.op_type == "EmbedLayerNormalization"
              for ids, table in ((0, 2), (1, 4)) if len(n.input) > table and n.input[ids]]
    for table, index in pairs:
        source = casts.get(index, index)
        if table in tables and source in inputs:
            sizes[source] = min(sizes.get(source, tables[table]), tables[table])
    return sizes


def generate_inputs(session, batch: int = 1, overrides: dict | None = None,
                    seed: int = 0, vocab_sizes: dict[str, int] | None = None,
                    symbolic_dims: int | None = None, default_vocab: int = TOKEN_VOCAB,
                    model_name: str = "the model") -> dict[str, np.ndarray]:
    """Random feeds from the declared inputs: floats ~N(0,1), token ids small, masks ones.

    The one input generator of the project: benchmarks, the quantizer's output check and
    the export parity checks all draw from it. Integer inputs: names with ``mask`` get ones,
    ``type``/``segment`` zeros, ``position`` the positions 0..n-1, and anything else (token
    ids) ids across the model's vocabulary (``vocab_sizes``, see :func:`token_vocab_sizes`)
    or below ``default_vocab`` (at most :data:`TOKEN_VOCAB`) when it is not known. ``symbolic_dims`` sizes every symbolic
    non-batch axis (parity checks use small ones). Inputs that could not fit in memory are
    refused before any array is made, naming ``model_name``.
    """
    from edgepack.core.memory_budget import check_fits

    overrides = overrides or {}
    check_shape_overrides(session, overrides)
    rng = np.random.default_rng(seed)
    planned = {}
    for inp in session.get_inputs():
        dtype = ORT_TO_NUMPY.get(inp.type)
        if dtype is None:
            raise ValueError(f"input {inp.name!r} has type {inp.type}, which edgepack cannot "
                             "generate; pass --data with real inputs")
        planned[inp.name] = (dtype, resolve_shape(inp, batch, overrides, symbolic_dims))
    past = _past_length(planned, overrides)
    check_fits(f"the inputs generated for {model_name} (its declared input shapes)", 0,
               int(sum(np.dtype(t).itemsize * float(np.prod(s)) for t, s in planned.values())),
               remedy="give real inputs, or smaller sizes with --shape / a model with "
                      "symbolic dimensions")
    known = vocab_sizes or {}
    return {name: _generated_value(name.lower(), dtype, shape, rng,
                                   known.get(name) or min(default_vocab, TOKEN_VOCAB), past)
            for name, (dtype, shape) in planned.items()}


PAST_KEY = "past_key_values.0.key"
CACHE_MASKS = ("attention_mask",)


def _past_length(planned: dict, overrides: dict) -> int:
    """A decoder with a KV cache (Optimum's and onnxruntime-genai's names): the cached
    length its generated ``past_key_values`` hold, with the feeds made to agree with it.

    Its mask covers the cache and the new tokens (``past + sequence`` long) and its position
    ids continue after the cache; generated independently, the mask would be as short as
    the new tokens and a ``Gather`` on the positions indexes past its table. 0 for any other
    model, or when ``--shape`` fixed the mask itself.
    """
    if PAST_KEY not in planned or "input_ids" not in planned:
        return 0
    past = planned[PAST_KEY][1][2] if len(planned[PAST_KEY][1]) == 4 else 0
    batch, sequence = planned["input_ids"][1][0], planned["input_ids"][1][-1]
    for name in CACHE_MASKS:
        if name in planned and name not in overrides and len(planned[name][1]) == 2:
            planned[name] = (planned[name][0], [batch, past + sequence])
    return past


def _generated_value(name: str, dtype, shape: list[int], rng, vocab: int,
                     past: int = 0) -> np.ndarray:
    if dtype is np.bool_ or (np.issubdtype(dtype, np.integer) and "mask" in name):
        return np.ones(shape, dtype=dtype)
    if np.issubdtype(dtype, np.integer):
        if "type" in name or "segment" in name:
            return np.zeros(shape, dtype=dtype)
        if "position" in name and shape:
            return np.broadcast_to(past + np.arange(shape[-1]), shape).astype(dtype)
        high = max(1, min(vocab, int(np.iinfo(dtype).max)))
        return rng.integers(0, high, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an ``.npz`` file without pickle; refuse empty or invalid files by name."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"data file {path} is not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as exc:
        raise ValueError(f"data file {path} could not be read as .npz ({exc})") from exc
    if not arrays:
        raise ValueError(f"data file {path} holds no arrays")
    return arrays


def check_feeds(session, arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Check arrays against the session inputs; return only the model's inputs."""
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    extra = [k for k in arrays if k not in names and k not in RESERVED_KEYS]
    if extra:
        raise ValueError(f"{source}: array {extra[0]!r} is not an input of the model "
                         f"(inputs: {', '.join(names)})")
    feeds = {}
    rows = None
    for inp in inputs:
        if inp.name not in arrays:
            raise ValueError(f"{source}: no array for model input {inp.name!r} "
                             f"(expected {inp.type} of shape {list(inp.shape)})")
        value = arrays[inp.name]
        want = ORT_TO_NUMPY.get(inp.type)
        if want is not None and value.dtype != want:
            raise ValueError(f"{source}: input {inp.name!r} has dtype {value.dtype}; expected "
                             f"{np.dtype(want).name} ({inp.type})")
        if value.ndim != len(inp.shape):
            raise ValueError(f"{source}: input {inp.name!r} has shape {list(value.shape)}; "
                             f"expected rank {len(inp.shape)} ({list(inp.shape)})")
        for have, dim in zip(value.shape[1:], list(inp.shape)[1:]):
            if isinstance(dim, int) and dim > 0 and have != dim:
                raise ValueError(f"{source}: input {inp.name!r} has shape "
                                 f"{list(value.shape)}; expected {list(inp.shape)}")
        if value.ndim == 0 or value.shape[0] == 0:
            raise ValueError(f"{source}: input {inp.name!r} has no rows (shape "
                             f"{list(value.shape)}); expected one row per sample on axis 0")
        if rows is not None and value.shape[0] != rows:
            raise ValueError(f"{source}: inputs have different numbers of rows")
        rows = value.shape[0]
        feeds[inp.name] = value
    for key in RESERVED_KEYS:
        if key in arrays and (arrays[key].ndim == 0 or arrays[key].shape[0] != rows):
            raise ValueError(f"{source}: {key!r} has shape {list(arrays[key].shape)}; expected "
                             f"{rows} rows, one per input row")
    labels = arrays.get("labels")
    if labels is not None and (labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{source}: 'labels' has shape {list(labels.shape)} and dtype "
                         f"{labels.dtype}; expected a 1-D array of integer class ids")
    return feeds


def check_labels(labels: np.ndarray, classes: int, source: str = "labels") -> None:
    """Refuse class ids outside the model's ``classes`` outputs: they would silently count as
    wrong answers (bench and quantize's accuracy check share this)."""
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{source} hold class ids from {labels.min()} to {labels.max()} but "
                         f"the model outputs {classes} classes (ids 0 to {classes - 1}); check "
                         "the labels match this model")


def batches(feeds: dict[str, np.ndarray], batch: int, fixed: bool = False):
    """Yield ``(start, stop, feeds_slice)`` over the rows.

    The last batch is partial, unless ``fixed`` (the model's batch dimension is fixed): then
    it is padded by repeating its last row, and the caller keeps only ``stop - start`` rows.
    """
    rows = next(iter(feeds.values())).shape[0]
    for start in range(0, rows, batch):
        stop = min(rows, start + batch)
        if fixed and stop - start < batch:
            index = np.minimum(np.arange(start, start + batch), rows - 1)
            yield start, stop, {k: v[index] for k, v in feeds.items()}
        else:
            yield start, stop, {k: v[start:stop] for k, v in feeds.items()}


def timing_feeds(feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The first ``batch`` rows of real data, repeated if the data has fewer rows."""
    rows = next(iter(feeds.values())).shape[0]
    index = np.arange(batch) % rows
    return {k: np.ascontiguousarray(v[index]) for k, v in feeds.items()}
