"""The fused graph: mobius-onnx, onnxscript's GenAI model builder, builds the decoder from
its architecture with ONNX Runtime's fused operators: GroupQueryAttention with the rotary
embedding inside, one packed QKV projection per layer, SkipSimplifiedLayerNormalization.
Fully offline from the local folder; why this builder and not another: docs/llm.md,
"The fused graph".

The rotary embedding under transformers 4.x. mobius reads a model's RoPE from the config's
``rope_parameters`` (which transformers 5 writes), ``rope_scaling``, or a ``rope_theta``
other than 10,000. optimum-onnx 0.1 needs transformers 4.x, whose configs state none of
them for a model with default RoPE (``rope_theta`` 10,000, no scaling): mobius then builds
the graph with no rotary embedding at all, and the parity check fails it by orders of
magnitude. The builder is therefore given the config with ``rope_parameters`` stated, as
transformers 5 writes it, whenever transformers' own model of that config holds a rotary
embedding. The user's folder is never changed: the builder reads a scratch folder holding
the amended config beside the model's files, hard links where the file system allows, else
copies (mobius refuses symbolic links that point out of the folder it reads).

``FUSED_MODEL_TYPES``: the model types whose fused graph passes the parity rule and runs in
onnxruntime-genai here (tests/export/test_decoder_architectures.py); ``graph = "auto"`` uses
the traced graph for the others.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from edgepack.core.deps import import_optional, quiet_library
from edgepack.export.decoder_graphs import DECODER_GRAPHS, DecoderGraph

FUSED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma"})
CONFIG_FILES = ("config.json", "generation_config.json")
SINGLE_FILE_LIMIT = 1_800_000_000   # bytes; larger graphs keep their weights in model.onnx.data


def uses_rotary_embedding(config) -> bool:
    """Whether transformers' model of ``config`` holds a rotary embedding module (built on
    the meta device: no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return any(name.endswith("rotary_emb") for name, _ in model.named_modules())


def rope_parameters(config) -> dict | None:
    """``rope_parameters`` as transformers 5 writes them, where the config leaves the RoPE
    unstated (None where it states it, or where the model has no rotary embedding)."""
    if getattr(config, "rope_scaling", None) is not None or \
            getattr(config, "rope_parameters", None) is not None:
        return None
    if not uses_rotary_embedding(config):
        return None
    stated = {"rope_type": "default", "rope_theta": float(getattr(config, "rope_theta", 10000.0))}
    if getattr(config, "partial_rotary_factor", None) is not None:
        stated["partial_rotary_factor"] = float(config.partial_rotary_factor)
    return stated


def builder_source(model_dir: Path, scratch: Path) -> Path:
    """The folder the builder reads: ``model_dir`` itself, or links to its files beside a
    config.json that states the RoPE (:func:`rope_parameters`)."""
    from transformers import AutoConfig

    stated = rope_parameters(AutoConfig.from_pretrained(str(model_dir), local_files_only=True))
    if stated is None:
        return model_dir
    scratch.mkdir()
    for item in model_dir.iterdir():
        if item.name != "config.json" and item.is_file():
            _link_or_copy(item, scratch / item.name)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    (scratch / "config.json").write_text(json.dumps({**config, "rope_parameters": stated}),
                                         encoding="utf-8")
    return scratch


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source.resolve(), target)
    except OSError:   # another file system, or links not allowed there
        shutil.copyfile(source, target)


def save_graph(built: Path, target: Path) -> None:
    """The builder's model (graph + external data) as ``target``: one file, or beside one
    ``model.onnx.data`` past ONNX's 2 GB protobuf limit."""
    import onnx

    model = onnx.load(str(built))
    large = sum(init.ByteSize() for init in model.graph.initializer) > SINGLE_FILE_LIMIT
    onnx.save(model, str(target), save_as_external_data=large,
              location=target.name + ".data" if large else None)


def build_fused(model_dir: Path, work_dir: Path, opset: int | None) -> None:
    if opset:
        raise ValueError(f"opset {opset} applies to the traced graph; the fused graph's "
                         f"builder writes its own (ONNX opset 24 with ONNX Runtime's fused "
                         f"operators): leave opset at 0, or set graph = \"traced\"")
    mobius = import_optional("mobius", None, "mobius-onnx", "llm")
    with tempfile.TemporaryDirectory(prefix=".fused.", dir=work_dir) as scratch:
        source = builder_source(Path(model_dir), Path(scratch) / "source")
        with quiet_library("mobius", stderr=True):   # its progress bars and notes
            package = mobius.build(str(source), dtype="f32", execution_provider="cpu")
            package.save(str(Path(scratch) / "built"))
        save_graph(Path(scratch) / "built" / "model.onnx", work_dir / "model.onnx")
    for name in CONFIG_FILES:   # beside the model, as optimum writes them (the context)
        if (Path(model_dir) / name).is_file():
            shutil.copyfile(Path(model_dir) / name, work_dir / name)


DECODER_GRAPHS.register(DecoderGraph(
    "fused", build_fused, library="mobius-onnx", model_types=FUSED_MODEL_TYPES, order=10,
    note="mobius-onnx's fused graph (GroupQueryAttention, packed QKV, fused norms)"))
