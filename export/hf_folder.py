"""A local Hugging Face model folder, checked before transformers loads anything from it.

transformers reads ``config.json``, allocates the model it describes and fills it from the
model's own weights: ``model.safetensors``, or the shards ``model.safetensors.index.json``
names. Each of those is a claim checked here first, with bounded reads:

- ``config.json`` is a JSON object (not a list), no larger than :data:`MAX_JSON_BYTES`,
  naming a ``model_type``, its size fields positive integers;
- the weights are the model's own files: another ``.safetensors`` beside them (an adapter, a
  decoy) is not the model, and a folder whose only full weights are a pickle is refused;
- each weights file's header is read by itself (8-byte length, JSON): every tensor's dtype,
  shape and byte range must agree with each other and lie inside the file, so a truncated
  file is named, not met as a traceback from the loader;
- the tensors have the shapes of the model ``config.json`` describes (built on the meta
  device, :mod:`edgepack.export.model_files`), and its fp32 copies during an export fit in memory.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from edgepack.export.model_files import (LAYER_INDEX, SIZE_FIELDS, check_missing, check_model_fits,
                                         check_shapes, check_size_value, element_count, meta_model)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES = 100_000_000            # the safetensors library's own bound
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
# An export holds the model in torch (fp32), its float64 twin for the parity check (two fp32
# copies' worth) and the ONNX Runtime session of the exported graph: four fp32 copies at
# the peak (edgepack.export.parity).
EXPORT_COPIES = 4
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
               "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
               "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object, read only when its size is sane."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{path} is {size:,} bytes; a model's JSON file is far smaller "
                         f"(bound {MAX_JSON_BYTES:,})")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}; expected an object "
                         "(as save_pretrained() writes it)")
    return data


def read_config(folder: Path) -> dict:
    """``config.json``, its ``model_type`` and size fields checked."""
    path = folder / CONFIG
    config = read_json_object(path)
    if not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise ValueError(f"{path}: model_type = {config.get('model_type')!r}; expected the "
                         "name of a transformers architecture (e.g. \"bert\", \"llama\")")
    for name in SIZE_FIELDS:
        if config.get(name) is not None:
            check_size_value(config[name], f"{path} {name}", name)
    return config


def _shard_names(index: Path) -> list[str]:
    """The shard files an index names: plain file names in the folder, nothing else."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or \
            not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index}: weight_map must map tensor names to shard file names")
    shards = sorted(set(weight_map.values()))
    for name in shards:
        if Path(name).name != name or name in (".", "..") or not name.endswith(".safetensors"):
            raise ValueError(f"{index}: shard {name!r} is not a .safetensors file name in "
                             "the model's folder")
        if not (index.parent / name).is_file():
            raise ValueError(f"{index}: shard {name!r} is not in the folder")
    return shards


def model_weight_files(folder: Path) -> list[Path]:
    """The model's own weights, as transformers picks them: ``model.safetensors``, else the
    shards of ``model.safetensors.index.json``; refused when neither is there."""
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    if (folder / INDEX).is_file():
        return [folder / name for name in _shard_names(folder / INDEX)]
    others = sorted(p.name for p in folder.glob("*.safetensors"))
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    found = [f"{', '.join(others)} (not the model's own weights: an adapter or another file)"
             ] if others else []
    found += [f"{', '.join(pickles)} (pickle or another framework's format)"] if pickles else []
    raise ValueError(f"{folder}: no .safetensors weights of the model's own ({WEIGHTS}, or "
                     f"the shards {INDEX} names)"
                     f"{' - found ' + '; '.join(found) if found else ''}; edgepack reads a "
                     "model's own weights as safetensors only, which cannot run code when "
                     "loaded: convert with model.save_pretrained(folder, "
                     "safe_serialization=True)")


def _counts(value) -> bool:
    """A list of non-negative integers (not booleans)."""
    return isinstance(value, list) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value)


def _tensor_entry(path: Path, name: str, info, data_bytes: int) -> tuple[int, int, tuple]:
    """(begin, end, shape) of one header entry, each field checked."""
    if not isinstance(info, dict) or info.get("dtype") not in DTYPE_BYTES:
        dtype = info.get("dtype") if isinstance(info, dict) else info
        raise ValueError(f"{path}: tensor {name!r} has dtype {dtype!r}; expected one of "
                         f"{', '.join(DTYPE_BYTES)}")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not _counts(shape) or not _counts(offsets) or len(offsets) != 2 or \
            offsets[0] > offsets[1]:
        raise ValueError(f"{path}: tensor {name!r} has shape {shape!r} and data_offsets "
                         f"{offsets!r}; expected lists of non-negative integers")
    begin, end = offsets
    if end - begin != math.prod(shape) * DTYPE_BYTES[info["dtype"]]:
        raise ValueError(f"{path}: tensor {name!r} ({info['dtype']}, shape {shape}) spans "
                         f"{end - begin:,} bytes in data_offsets, not the "
                         f"{math.prod(shape) * DTYPE_BYTES[info['dtype']]:,} its shape needs")
    if end > data_bytes:
        raise ValueError(f"{path}: tensor {name!r} lies at bytes {begin:,} to {end:,} of the "
                         f"data, but the file holds only {data_bytes:,} (a truncated file)")
    return begin, end, tuple(shape)


def _header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the size of its data section."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else None
        if length is None or length > MAX_HEADER_BYTES or 8 + length > size:
            raise ValueError(f"{path} is not a safetensors file: its header length "
                             f"{length if length is not None else '(missing)'} does not fit "
                             f"the file's {size:,} bytes (a truncated or foreign file)")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: its safetensors header is not valid JSON ({exc})") \
                from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: its safetensors header is not a JSON object")
    return header, size - 8 - length


def read_safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the header alone; byte ranges must tile the data section
    exactly (no overlap, no gap, nothing past the end)."""
    header, data_bytes = _header(path)
    spans, shapes = [], {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end, shapes[name] = _tensor_entry(path, name, info, data_bytes)
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ValueError(f"{path}: tensor {name!r} starts at byte {begin:,} of the data, "
                             f"expected {position:,} (overlapping or scattered tensors)")
        position = end
    if position != data_bytes:
        raise ValueError(f"{path}: its tensors end at byte {position:,} of the data, but the "
                         f"file holds {data_bytes:,} (extra bytes after the last tensor)")
    return shapes


def _described(folder: Path, config: dict) -> str:
    sizes = ", ".join(f"{n} = {config[n]}" for n in SIZE_FIELDS if config.get(n) is not None)
    return f"{folder / CONFIG} describes" + (f" ({sizes})" if sizes else "")


def _build(folder: Path):
    """The model class ``config.json`` names (its ``architectures``), else the base model."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                                     trust_remote_code=False)
    names = getattr(config, "architectures", None) or []
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""
    model_class = getattr(transformers, name, None) if name.isidentifier() else None
    if model_class is None or not isinstance(model_class, type) or \
            not issubclass(model_class, transformers.PreTrainedModel):
        return transformers.AutoModel.from_config(config, trust_remote_code=False)
    return model_class(config)


def _model_names(model, names) -> dict[str, str]:
    """File tensor name -> the model's name for it, renamed as transformers renames on load
    (legacy names, the base model's prefix added or dropped); unknown names left out."""
    own = model.state_dict().keys()
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    found = {}
    for name in names:
        fixed = model._fix_state_dict_key_on_load(name)[0] \
            if hasattr(model, "_fix_state_dict_key_on_load") else name
        for candidate in (fixed, prefix + fixed, fixed.removeprefix(prefix)):
            if candidate in own:
                found[name] = candidate
                break
    return found


def _check_extra_layers(model, found: dict, renamed: dict, source: str, described: str) -> None:
    """A layer the weights hold beyond the config's count (the same tensor of layer 0 is
    the model's, this one is not): transformers would drop it without a word."""
    for name in found:
        match = LAYER_INDEX.search(name)
        if name in renamed or not match or match.group(1) == "0":
            continue
        if _model_names(model, [f"{name[:match.start()]}.0.{name[match.end():]}"]):
            raise ValueError(f"{source}: tensor {name!r} belongs to layer {match.group(1)}, "
                             f"which the model {described} does not have (a false layer "
                             "count: the layer would be dropped)")


def check_hf_folder(folder, work: str = "exporting", copies: int = EXPORT_COPIES) -> dict:
    """Check a local model folder's config and weights against each other, and that
    ``copies`` fp32 copies of the model fit in memory for ``work``; return
    ``{"weights": [file names], "elements": n}``."""
    folder = Path(folder)
    files = model_weight_files(folder)
    config = read_config(folder)
    found: dict[str, tuple[int, ...]] = {}
    for path in files:
        found.update(read_safetensors_header(path))
    model = meta_model(lambda: _build(folder), str(folder / CONFIG))
    renamed = _model_names(model, found)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    described = _described(folder, config)
    source = ", ".join(str(p) for p in files)
    check_shapes({renamed[n]: s for n, s in found.items() if n in renamed}, expected,
                 source, described)
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    check_missing([n for n in params if n not in renamed.values()], params, source, described)
    _check_extra_layers(model, found, renamed, source, described)
    elements = element_count(model)
    check_model_fits(f"{work} {folder}", elements, copies,
                     "free memory, or use a smaller model")
    return {"weights": [p.name for p in files], "elements": elements}


__all__ = ["check_hf_folder", "model_weight_files", "read_config", "read_safetensors_header"]
