"""Check an ONNX file before ONNX Runtime sees it.

An ``.onnx`` file may point at external data files by relative path. A hostile model can
point at ``../../etc/passwd`` or an absolute path, or through a symlink, and a sloppy one at
an offset past the end of its data file. :func:`check_onnx_file` loads the graph without
external data, checks every location stays inside the model's folder and every
offset+length fits, and then runs ``onnx.checker.check_model(full_check=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper

from edgepack.core.files import working_directory


def _external_tensors(model: onnx.ModelProto):
    """Every tensor of the model (graph, subgraphs, attributes) that uses external data."""
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            yield tensor


def external_tensor_names(model: onnx.ModelProto) -> list[str]:
    """Names of the tensors whose data lives in a file beside the model."""
    return [tensor.name for tensor in _external_tensors(model)]


def resolve_inside(base: Path, location: str) -> Path:
    """Resolve ``location`` relative to ``base``, refusing any escape from ``base``.

    Absolute paths, ``..`` components that leave the folder and symlinks are refused: the
    data file must be a regular file that lies inside the model's folder.
    """
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")):
        raise ValueError(f"external data location {location!r} must be a relative path "
                         "inside the model's folder")
    base = base.resolve()
    candidate = base / location
    parts = Path(location).parts
    probe = base
    for part in parts:
        probe = probe / part
        if probe.is_symlink():
            raise ValueError(f"external data location {location!r} goes through a symlink "
                             f"({probe}); expected a regular file inside {base}")
    resolved = candidate.resolve()
    if resolved != base and base not in resolved.parents:
        raise ValueError(f"external data location {location!r} resolves outside the "
                         f"model's folder {base}")
    return resolved


def check_external_data(model: onnx.ModelProto, model_dir: Path) -> list[Path]:
    """Check each external data reference; return the data files it uses."""
    used: list[Path] = []
    for tensor in _external_tensors(model):
        info = external_data_helper.ExternalDataInfo(tensor)
        data_file = resolve_inside(model_dir, info.location)
        if not data_file.is_file():
            raise ValueError(f"external data file {info.location!r} of tensor "
                             f"{tensor.name!r} is missing (expected it in {model_dir})")
        size = data_file.stat().st_size
        offset = int(info.offset or 0)
        length = int(info.length) if info.length is not None else size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise ValueError(f"external data of tensor {tensor.name!r} at offset {offset} "
                             f"length {length} does not fit {info.location!r} "
                             f"({size} bytes)")
        needed = tensor_bytes(tensor)
        if needed is not None and length < needed:
            raise ValueError(f"external data of tensor {tensor.name!r} has {length} bytes in "
                             f"{info.location!r} but its shape {list(tensor.dims)} needs "
                             f"{needed}; the data file is truncated or the tensor is wrong")
        if data_file not in used:
            used.append(data_file)
    return used


def tensor_bytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes a tensor's values take (None for types without a fixed size, e.g. strings)."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.INT4,
                            onnx.TensorProto.UINT4):
        return None
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    return count * itemsize


def check_opset(model: onnx.ModelProto, path: Path) -> None:
    """Refuse an opset newer than any released one this onnx knows (e.g. opset 99)."""
    newest = onnx.defs.onnx_opset_version()
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > newest:
            raise ValueError(f"{path} declares opset {entry.version}; the newest opset this "
                             f"onnx release knows is {newest}; re-export with opset <= "
                             f"{newest}")


def load_onnx_header(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse an ONNX file without its external data, with a clear error if it is not one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if not path.is_file():
        raise ValueError(f"ONNX model {path} is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"ONNX model {path} is empty (0 bytes)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ValueError(f"{path} is not a valid ONNX model (could not parse it: "
                         f"{type(exc).__name__})") from exc
    if not model.graph.node and not model.graph.output:
        raise ValueError(f"{path} is not a valid ONNX model (no graph found)")
    return model


def check_unique_node_names(model: onnx.ModelProto, path: Path) -> None:
    """Two nodes of one graph with the same name pass onnx's checker, but ONNX Runtime
    refuses the model: refuse it first, naming the node."""
    seen: set[str] = set()
    for node in model.graph.node:
        if node.name and node.name in seen:
            raise ValueError(f"{path} has two nodes named {node.name!r} (ONNX Runtime refuses "
                             "duplicate node names); give every node a name of its own")
        seen.add(node.name)


def check_inputs_and_outputs(model: onnx.ModelProto, path: Path, purpose: str) -> None:
    """Refuse a graph with no inputs (it computes a constant) or no outputs, for
    ``purpose`` (quantization, packaging) that needs to feed it and compare its outputs."""
    initializers = {init.name for init in model.graph.initializer}
    if not [i for i in model.graph.input if i.name not in initializers]:
        raise ValueError(f"{path} has no inputs (its graph computes a constant); {purpose} "
                         "needs a model that takes inputs")
    if not model.graph.output:
        raise ValueError(f"{path} has no outputs; {purpose} needs a model whose outputs can "
                         "be checked")


# ONNX Runtime registers a few ops of its own in the standard domain, which onnx's checker
# does not know; onnxruntime-genai's model builder writes them (SimplifiedLayerNormalization
# is RMSNorm). The checker sees them under a domain of their own and checks the structure of
# the rest (its shape inference cannot run through ops it does not know).
ORT_OPS_IN_ONNX_DOMAIN = ("SimplifiedLayerNormalization",)
ORT_OPS_DOMAIN = "ai.onnxruntime.standard_domain_ops"


def _with_ort_ops_aside(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the graph (without weight data) whose ONNX Runtime ops of the standard
    domain are moved to a domain of their own, for the checker."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.op_type in ORT_OPS_IN_ONNX_DOMAIN and node.domain in ("", "ai.onnx"):
            node.domain = ORT_OPS_DOMAIN
    copy.opset_import.append(onnx.helper.make_opsetid(ORT_OPS_DOMAIN, 1))
    return copy


def check_onnx_file(path: str | os.PathLike) -> onnx.ModelProto:
    """Validate an ONNX file and its external data; return the graph (without data).

    Raises ``ValueError`` with one line naming the file and what is wrong.
    """
    path = Path(path)
    model = load_onnx_header(path)
    check_opset(model, path)
    check_unique_node_names(model, path)
    check_external_data(model, path.parent)
    try:
        if any(n.op_type in ORT_OPS_IN_ONNX_DOMAIN and n.domain in ("", "ai.onnx")
               for n in model.graph.node):
            # Structure only: shape inference cannot see through ops it does not know.
            with working_directory(path.parent):  # external data paths are relative to the model
                onnx.checker.check_model(_with_ort_ops_aside(model), full_check=False)
        else:
            onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} fails the ONNX checker: {first_line}") from exc
    return model


def model_size_bytes(path: str | os.PathLike) -> int:
    """Size of an ONNX model on disk, its external data files included."""
    path = Path(path)
    model = load_onnx_header(path)
    total = path.stat().st_size
    for data_file in check_external_data(model, path.parent):
        total += data_file.stat().st_size
    return total


WEIGHT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8, onnx.TensorProto.UINT8,
                onnx.TensorProto.INT4, onnx.TensorProto.UINT4}


def parameter_count(model: onnx.ModelProto) -> int:
    """Number of weight values in the graph's initializers (shape and index constants,
    int32/int64, are not weights and are not counted)."""
    total = 0
    for init in model.graph.initializer:
        if init.data_type not in WEIGHT_TYPES:
            continue
        count = 1
        for dim in init.dims:
            count *= int(dim)
        total += count
    return total
