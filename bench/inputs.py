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

ORT_TO_NUMPY = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}
RESERVED_KEYS = ("labels", "reference")
TOKEN_VOCAB = 1000  # generated token ids stay in a small range every vocabulary has


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


def resolve_shape(inp, batch: int, overrides: dict[str, list[int]]) -> list[int]:
    """A concrete shape for a declared input: overrides, then batch, then defaults."""
    declared = list(inp.shape)
    if inp.name in overrides:
        shape = overrides[inp.name]
        if len(shape) != len(declared):
            raise ValueError(f"--shape {inp.name}={','.join(map(str, shape))} has rank "
                             f"{len(shape)}; input {inp.name!r} has rank {len(declared)} "
                             f"(declared {declared})")
        for want, have in zip(declared, shape):
            if isinstance(want, int) and want > 0 and want != have:
                raise ValueError(f"--shape {inp.name}={','.join(map(str, shape))} does not fit"
                                 f" the declared shape {declared} of input {inp.name!r}")
        return shape
    shape = []
    for axis, dim in enumerate(declared):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif axis == 0:
            shape.append(batch)
        else:
            shape.append(128 if "seq" in str(dim).lower() or len(declared) == 2 else 1)
    return shape


def generate_inputs(session, batch: int = 1, overrides: dict | None = None,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds from the declared inputs: floats ~N(0,1), token ids small, masks ones."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        dtype = ORT_TO_NUMPY.get(inp.type)
        if dtype is None:
            raise ValueError(f"input {inp.name!r} has type {inp.type}, which edgepack cannot "
                             "generate; pass --data with real inputs")
        shape = resolve_shape(inp, batch, overrides or {})
        lname = inp.name.lower()
        if np.issubdtype(dtype, np.integer):
            if "mask" in lname:
                value = np.ones(shape, dtype=dtype)
            elif "type" in lname or "segment" in lname:
                value = np.zeros(shape, dtype=dtype)
            else:
                value = rng.integers(0, TOKEN_VOCAB, size=shape).astype(dtype)
        elif dtype is np.bool_:
            value = np.ones(shape, dtype=dtype)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        feeds[inp.name] = value
    return feeds


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
        if value.shape[0] == 0:
            raise ValueError(f"{source}: input {inp.name!r} is empty (0 rows)")
        if rows is not None and value.shape[0] != rows:
            raise ValueError(f"{source}: inputs have different numbers of rows")
        rows = value.shape[0]
        feeds[inp.name] = value
    for key in RESERVED_KEYS:
        if key in arrays and arrays[key].shape[0] != rows:
            raise ValueError(f"{source}: {key!r} has {arrays[key].shape[0]} rows; the inputs "
                             f"have {rows}")
    return feeds


def batches(feeds: dict[str, np.ndarray], batch: int):
    """Yield ``(start, stop, feeds_slice)`` over the rows, the last batch partial."""
    rows = next(iter(feeds.values())).shape[0]
    for start in range(0, rows, batch):
        stop = min(rows, start + batch)
        yield start, stop, {k: v[start:stop] for k, v in feeds.items()}
