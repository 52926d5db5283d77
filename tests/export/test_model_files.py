"""The readers of model-file headers: each declared size is checked against the file, and a
good file of every shape the writers make reads back as written."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from edgepack.export.hf_folder import check_hf_folder, read_safetensors_header

gguf = pytest.importorskip("gguf", reason="pip install 'edgepack[llm]'")

from edgepack.export.gguf_header import GgufArray, read_gguf_header  # noqa: E402
from tests.export.gguf_files import gguf_string, raw_gguf, write_llama_gguf  # noqa: E402


def test_a_written_gguf_reads_back_as_the_gguf_reader_sees_it(tmp_path):
    path = write_llama_gguf(tmp_path / "m.gguf")
    header = read_gguf_header(path)
    reader = gguf.GGUFReader(str(path))
    assert header.data_offset == reader.data_offset
    assert [(t.name, t.shape, t.nbytes) for t in header.tensors] == [
        (t.name, tuple(int(d) for d in reversed(t.shape)), int(t.n_bytes))
        for t in reader.tensors]
    assert header.metadata["llama.block_count"] == 2
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, GgufArray) and tokens.count == 261 and tokens.values is not None


def test_a_big_endian_file_reads_like_its_little_endian_twin(tmp_path):
    little = gguf.GGUFWriter(str(tmp_path / "le.gguf"), "llama")
    big = gguf.GGUFWriter(str(tmp_path / "be.gguf"), "llama", endianess=gguf.GGUFEndian.BIG)
    for writer in (little, big):
        writer.add_block_count(3)
        writer.add_tensor("token_embd.weight", np.ones((4, 8), np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    a, b = read_gguf_header(tmp_path / "le.gguf"), read_gguf_header(tmp_path / "be.gguf")
    assert a.metadata == b.metadata and a.tensors == b.tensors


@pytest.mark.parametrize("raw, says", [
    (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "version 1"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("k") + struct.pack("<IQ", 13, 0),
     "value type 13"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("general.alignment") +
     struct.pack("<II", 4, 24), "'general.alignment' = 24"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("k") +
     struct.pack("<IQ", 8, 2) + b"\xff\xfe" * 8, "not UTF-8"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("k") +
     struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 0, 0),
     "nests arrays"),
    (b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + gguf_string("t") + struct.pack("<I", 5) +
     bytes(64), "declares 5 dimensions"),
    (b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + gguf_string("t") +
     struct.pack("<IQIQ", 1, 33, 2, 0) + bytes(64), "whole number of Q4_0 blocks"),
    (b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + gguf_string("t") +
     struct.pack("<IQIQ", 1, 4, 999, 0) + bytes(64), "type id 999"),
    (b"GGUF" + struct.pack("<IQQ", 3, 2, 0) + 2 * (gguf_string("t") +
     struct.pack("<IQIQ", 1, 4, 0, 0)) + bytes(64), "'t' appears twice"),
    (b"GG", "not a GGUF file"),
], ids=lambda value: value if isinstance(value, str) else "header")
def test_a_false_gguf_header_is_named(tmp_path, raw, says):
    path = tmp_path / "bad.gguf"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=says.replace("(", r"\(")) as info:
        read_gguf_header(path)
    assert str(path) in str(info.value)


def test_an_array_of_every_scalar_type_is_sized_before_it_is_read(tmp_path):
    for item_type, size in ((0, 1), (3, 2), (6, 4), (10, 8), (12, 8)):
        path = raw_gguf(tmp_path / f"t{item_type}.gguf", gguf_string("a") + struct.pack(
            "<IIQ", 9, item_type, 2**33) + bytes(16))
        with pytest.raises(ValueError, match=f"needs {2**33 * size:,} bytes"):
            read_gguf_header(path)


def _safetensors(path, entries: dict, data: bytes) -> None:
    header = json.dumps(entries).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


@pytest.mark.parametrize("entries, data, says", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), "overlapping"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(12),
     "extra bytes after the last tensor"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8),
     "not the 12 its shape needs"),
    ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), "dtype 'Q4'"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8),
     "non-negative integers"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8), "truncated"),
])
def test_a_false_safetensors_header_is_named(tmp_path, entries, data, says):
    path = tmp_path / "model.safetensors"
    _safetensors(path, entries, data)
    with pytest.raises(ValueError, match=says) as info:
        read_safetensors_header(path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, num_labels=3)
    folder = tmp_path_factory.mktemp("bert")
    BertForSequenceClassification(config).save_pretrained(folder, max_shard_size="40KB")
    return folder


def test_sharded_weights_are_the_model_s_own(bert):
    result = check_hf_folder(bert)
    assert len(result["weights"]) > 1 and all(n.endswith(".safetensors")
                                              for n in result["weights"])


def test_a_shard_the_index_names_must_be_there(tmp_path, bert):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(bert, folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    missing = sorted(set(index["weight_map"].values()))[-1]
    (folder / missing).unlink()
    with pytest.raises(ValueError, match=f"shard '{missing}' is not in the folder"):
        check_hf_folder(folder)


def test_legacy_layer_norm_names_load_as_transformers_loads_them(tmp_path):
    """TensorFlow-era checkpoints call a LayerNorm's weight gamma and its bias beta."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta"): v for k, v in tensors.items()}
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert check_hf_folder(tmp_path)["weights"] == ["model.safetensors"]
    assert torch.is_tensor(next(iter(renamed.values())))
