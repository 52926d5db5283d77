"""The header of a GGUF file, read with bounded reads before any GGUF reader sees it.

A GGUF file starts with counts and lengths: how many metadata entries, how long each string,
how many items each array, how many tensors, their shapes and where their bytes lie. A
reader that trusts them allocates what they say (``gguf.GGUFReader`` memory-maps the file and
builds an array per declared item: a 4-byte file declaring 2**40 array items ran for a
minute and ended in ``MemoryError``). Here every count and length is checked against the
bytes the file really has left *before* it is read, so a false one is refused in
microseconds, with one line naming the field:

    >>> read_gguf_header("model.gguf").metadata["llama.block_count"]
    30

Metadata values are kept when they are numbers, strings, or arrays of at most
:data:`KEPT_ARRAY_ITEMS` items; longer arrays (a tokenizer's vocabulary) keep their item type
and count only. The format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.core.deps import import_optional

GGUF_MAGIC = b"GGUF"
VERSIONS = (2, 3)                 # what the gguf package reads (version 1 had 32-bit counts)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4                      # GGML_MAX_DIMS
MAX_NESTING = 2                   # arrays of arrays of scalars, at most
MAX_VALUES = 1 << 24              # metadata values in all: real files hold about a million
KEPT_ARRAY_ITEMS = 4096           # arrays this short keep their values (per-layer sizes)
MAX_ELEMENTS = 1 << 48            # elements of one tensor

# value type -> (name, struct format); 8 (string) and 9 (array) are read apart.
SCALARS = {0: ("uint8", "B"), 1: ("int8", "b"), 2: ("uint16", "H"), 3: ("int16", "h"),
           4: ("uint32", "I"), 5: ("int32", "i"), 6: ("float32", "f"), 7: ("bool", "?"),
           10: ("uint64", "Q"), 11: ("int64", "q"), 12: ("float64", "d")}
STRING, ARRAY = 8, 9
MIN_ITEM_BYTES = {STRING: 8, ARRAY: 12}   # an empty string / an empty array


@dataclass
class GgufArray:
    """A metadata array: its item type, its count, and its values when it is short."""

    item_type: str
    count: int
    values: list | None = None


@dataclass
class GgufTensor:
    """One tensor's entry: ``dims`` in GGUF order (innermost first), its type's name, and
    its bytes' place in the data section."""

    name: str
    dims: tuple[int, ...]
    type_name: str
    offset: int
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape in torch / numpy order (outermost first)."""
        return tuple(reversed(self.dims))

    @property
    def elements(self) -> int:
        return math.prod(self.dims)


@dataclass
class GgufHeader:
    """What a GGUF file declares, every size already checked against the file."""

    path: Path
    version: int
    size: int
    metadata: dict = field(default_factory=dict)
    tensors: list[GgufTensor] = field(default_factory=list)
    data_offset: int = 0

    @property
    def architecture(self) -> str:
        value = self.metadata.get("general.architecture", "")
        return value if isinstance(value, str) else ""


class _BoundedReader:
    """Reads from the file only what is there: every read names what it is for, and a
    length beyond the bytes left is refused before anything is read or allocated."""

    def __init__(self, handle, path: Path, size: int, order: str = "<"):
        self.handle, self.path, self.size, self.order = handle, path, size, order
        self.position = 0
        self.values = 0

    def left(self) -> int:
        return self.size - self.position

    def refuse(self, what: str, needed: int) -> ValueError:
        return ValueError(f"{self.path}: {what} needs {needed:,} bytes at offset "
                          f"{self.position:,}, but the file has only {self.left():,} left "
                          "(a truncated file, or a false count in its header)")

    def take(self, size: int, what: str) -> bytes:
        if size > self.left():
            raise self.refuse(what, size)
        data = self.handle.read(size)
        self.position += size
        return data

    def skip(self, size: int, what: str) -> None:
        if size > self.left():
            raise self.refuse(what, size)
        self.handle.seek(size, os.SEEK_CUR)
        self.position += size

    def number(self, fmt: str, what: str):
        return struct.unpack(self.order + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        length = self.number("Q", f"the length of {what}")
        raw = self.take(length, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{self.path}: {what} is not UTF-8 text") from None

    def count_value(self, key: str) -> None:
        self.values += 1
        if self.values > MAX_VALUES:
            raise ValueError(f"{self.path}: metadata {key!r} brings the file past "
                             f"{MAX_VALUES:,} metadata values; no model's header holds that "
                             "many")


def _value(reader: _BoundedReader, type_id: int, key: str, depth: int = 0):
    """One metadata value of ``type_id`` (arrays: :class:`GgufArray`)."""
    reader.count_value(key)
    if type_id in SCALARS:
        return reader.number(SCALARS[type_id][1], f"metadata {key!r}")
    if type_id == STRING:
        return reader.string(f"metadata {key!r}")
    if type_id == ARRAY:
        return _array(reader, key, depth)
    raise ValueError(f"{reader.path}: metadata {key!r} has value type {type_id}, which GGUF "
                     "does not define (0-12)")


def _array(reader: _BoundedReader, key: str, depth: int) -> GgufArray:
    """An array, its count checked against the bytes left before any item is read."""
    if depth >= MAX_NESTING:
        raise ValueError(f"{reader.path}: metadata {key!r} nests arrays deeper than "
                         f"{MAX_NESTING} levels")
    item_type = reader.number("I", f"the item type of metadata {key!r}")
    count = reader.number("Q", f"the item count of metadata {key!r}")
    if item_type in SCALARS:
        name, fmt = SCALARS[item_type]
        needed = count * struct.calcsize(fmt)
    elif item_type in MIN_ITEM_BYTES:
        name, needed = ("string" if item_type == STRING else "array"), \
            count * MIN_ITEM_BYTES[item_type]
    else:
        raise ValueError(f"{reader.path}: metadata {key!r} is an array of value type "
                         f"{item_type}, which GGUF does not define (0-12)")
    if needed > reader.left():
        raise reader.refuse(f"metadata {key!r} (an array of {count:,} {name} items)", needed)
    if item_type in SCALARS and count > KEPT_ARRAY_ITEMS:
        reader.values += count
        reader.count_value(key)
        reader.skip(needed, f"metadata {key!r}")
        return GgufArray(name, count)
    if count > KEPT_ARRAY_ITEMS:   # read (each length checked) but not kept
        for _ in range(count):
            _value(reader, item_type, key, depth + 1)
        return GgufArray(name, count)
    return GgufArray(name, count, [_value(reader, item_type, key, depth + 1)
                                   for _ in range(count)])


def _metadata(reader: _BoundedReader, count: int) -> dict:
    found: dict = {}
    for index in range(count):
        key = reader.string(f"metadata key {index}")
        if key in found:
            raise ValueError(f"{reader.path}: metadata {key!r} appears twice")
        type_id = reader.number("I", f"the value type of metadata {key!r}")
        found[key] = _value(reader, type_id, key)
    return found


def _quant_sizes() -> dict[int, tuple[str, int, int]]:
    """type id -> (name, elements per block, bytes per block), from the gguf package."""
    gguf = import_optional("gguf", None, "gguf", "llm")
    return {int(t): (t.name, *gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType
            if t in gguf.GGML_QUANT_SIZES}


def _tensor(reader: _BoundedReader, index: int, types: dict) -> GgufTensor:
    """One tensor entry; its type, rank and element count checked."""
    name = reader.string(f"the name of tensor {index}")
    rank = reader.number("I", f"the rank of tensor {name!r}")
    if not 1 <= rank <= MAX_DIMS:
        raise ValueError(f"{reader.path}: tensor {name!r} declares {rank} dimensions; GGUF "
                         f"allows 1 to {MAX_DIMS}")
    dims = tuple(reader.number("Q", f"the shape of tensor {name!r}") for _ in range(rank))
    type_id = reader.number("I", f"the type of tensor {name!r}")
    offset = reader.number("Q", f"the data offset of tensor {name!r}")
    if type_id not in types:
        raise ValueError(f"{reader.path}: tensor {name!r} has type id {type_id}, which the "
                         "gguf package does not know")
    type_name, block, block_bytes = types[type_id]
    elements = math.prod(dims)
    if elements > MAX_ELEMENTS or dims[0] % block:
        raise ValueError(f"{reader.path}: tensor {name!r} has shape {list(reversed(dims))}, "
                         f"which is not a whole number of {type_name} blocks of {block} "
                         f"(or is beyond {MAX_ELEMENTS:,} elements)")
    return GgufTensor(name, dims, type_name, offset, elements // block * block_bytes)


def _alignment(path: Path, metadata: dict) -> int:
    value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or \
            value & (value - 1) or value > 1 << 20:
        raise ValueError(f"{path}: metadata 'general.alignment' = {value!r}; expected a power "
                         "of two up to 1,048,576")
    return value


def _check_tensor_data(header: GgufHeader) -> None:
    """Every tensor's bytes lie inside the file (a truncated file is named here)."""
    data_bytes = header.size - header.data_offset
    seen: set[str] = set()
    for tensor in header.tensors:
        if tensor.name in seen:
            raise ValueError(f"{header.path}: tensor {tensor.name!r} appears twice")
        seen.add(tensor.name)
        if tensor.offset + tensor.nbytes > data_bytes:
            raise ValueError(f"{header.path}: tensor {tensor.name!r} ({tensor.type_name}, "
                             f"shape {list(tensor.shape)}) needs bytes {tensor.offset:,} to "
                             f"{tensor.offset + tensor.nbytes:,} of the data section, which "
                             f"holds {data_bytes:,} (a truncated file, or a false shape)")


def _byte_order(path: Path, raw_version: bytes) -> str:
    """``<`` or ``>``: a file written on a big-endian machine has its version swapped."""
    version = struct.unpack("<I", raw_version)[0]
    return ">" if version & 0xFFFF == 0 and version else "<"


def read_gguf_header(path) -> GgufHeader:
    """The checked header of the GGUF file at ``path`` (``ValueError`` naming the field)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        reader = _BoundedReader(handle, path, size)
        if reader.take(min(4, size), "the magic bytes") != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file (it does not start with the GGUF "
                             "magic bytes)")
        raw = reader.take(4, "the version")
        reader.order = _byte_order(path, raw)
        version = struct.unpack(reader.order + "I", raw)[0]
        if version not in VERSIONS:
            raise ValueError(f"{path}: GGUF version {version} is not one the gguf package "
                             f"reads ({', '.join(map(str, VERSIONS))})")
        tensor_count = reader.number("Q", "the tensor count")
        metadata_count = reader.number("Q", "the metadata count")
        if metadata_count * 13 > reader.left():   # 13: an empty key and a one-byte value
            raise reader.refuse(f"the metadata count ({metadata_count:,} entries)",
                                metadata_count * 13)
        metadata = _metadata(reader, metadata_count)
        if tensor_count * 32 > reader.left():     # 32: a 1-D tensor with an empty name
            raise reader.refuse(f"the tensor count ({tensor_count:,} tensors)",
                                tensor_count * 32)
        types = _quant_sizes()
        tensors = [_tensor(reader, index, types) for index in range(tensor_count)]
    alignment = _alignment(path, metadata)
    data_offset = -(-reader.position // alignment) * alignment
    header = GgufHeader(path, version, size, metadata, tensors, data_offset)
    _check_tensor_data(header)
    return header


__all__ = ["GgufArray", "GgufHeader", "GgufTensor", "read_gguf_header"]
