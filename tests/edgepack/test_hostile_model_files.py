"""Hostile model files are bad input: exit 2, one line naming the file and the field, nothing
written, and nothing allocated from the sizes they claim (the claims here run to terabytes;
each is refused from the header, in milliseconds)."""

from __future__ import annotations

import json
import shutil
import struct
import textwrap

import pytest

from tests.edgepack.helpers import error_line, run_cli

gguf = pytest.importorskip("gguf", reason="pip install 'edgepack[llm]'")

from tests.export.gguf_files import (  # noqa: E402
    array_entry,
    gguf_string,
    raw_gguf,
    write_llama_gguf,
)


def _truncated(path):
    good = write_llama_gguf(path)
    good.write_bytes(good.read_bytes()[:-100])
    return good


GGUF_CASES = {
    # name: (how the file is made, what the error line must name)
    "a 2**40-item array in 4 bytes": (
        lambda p: raw_gguf(p, array_entry("x.bomb", 0, 2**40, b"\0" * 4)),
        ["'x.bomb'", "1,099,511,627,776"]),
    "a key 2**62 bytes long": (
        lambda p: raw_gguf(p, struct.pack("<Q", 2**62) + b"abc" + bytes(16)),
        ["metadata key 0", "4,611,686,018,427,387,904"]),
    "a duplicate key": (
        lambda p: raw_gguf(p, 2 * (gguf_string("a.b") + struct.pack("<IB", 0, 1)), kv_count=2),
        ["'a.b'", "twice"]),
    "4096 layers, 65,536 wide, tiny tensors": (
        lambda p: write_llama_gguf(p, metadata={"llama.block_count": 4096,
                                                "llama.embedding_length": 65536}),
        ["'llama.block_count'", "4,096"]),
    "900 layers over two blocks of tensors": (
        lambda p: write_llama_gguf(p, metadata={"llama.block_count": 900}),
        ["'llama.block_count'", "2 blocks"]),
    "16,384 wide, FFN 65,536, tiny tensors": (
        lambda p: write_llama_gguf(p, metadata={"llama.embedding_length": 16384,
                                                "llama.feed_forward_length": 65536}),
        ["'token_embd.weight'", "llama.embedding_length = 16384"]),
    "metadata without tensors": (
        lambda p: write_llama_gguf(p, tensors=False, metadata={
            "llama.embedding_length": 16384, "llama.feed_forward_length": 65536}),
        ["'llama.block_count'", "no block tensors"]),
    "a t5 (not a decoder)": (
        lambda p: write_llama_gguf(p, architecture="t5"),
        ["'general.architecture'", "'t5'"]),
    "a tensor one column short": (
        lambda p: write_llama_gguf(p, shapes={"blk.1.ffn_down.weight": (16, 31)}),
        ["'blk.1.ffn_down.weight'", "[16, 31]", "[16, 32]"]),
    "a layer's tensor missing": (
        lambda p: write_llama_gguf(p, drop=("blk.1.attn_q.weight",)),
        ["'blk.1.attn_q.weight'"]),
    "a truncated file": (_truncated, ["'blk.1.ffn_down.weight'", "truncated"]),
    "block_count = 'two'": (
        lambda p: write_llama_gguf(p, metadata={"llama.block_count": "two"}),
        ["'llama.block_count'", "'two'"]),
    "rope base NaN": (
        lambda p: write_llama_gguf(p, metadata={"llama.rope.freq_base": float("nan")}),
        ["'llama.rope.freq_base'"]),
    "more tokens than embedding rows": (
        lambda p: write_llama_gguf(p, shapes={"token_embd.weight": (200, 16)},
                                   metadata={"llama.vocab_size": 200}),
        ["'tokenizer.ggml.tokens'", "200 rows"]),
    "merges of tokens the vocabulary lacks": (
        lambda p: write_llama_gguf(p, metadata={"tokenizer.ggml.merges": ["x y"]}),
        ["tokenizer.ggml"]),
    "token types that do not match the tokens": (
        lambda p: write_llama_gguf(p, metadata={"tokenizer.ggml.token_type": [1, 2]}),
        ["'tokenizer.ggml.token_type'"]),
}


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_export_gguf_refuses_a_hostile_file_in_one_line(tmp_path, capsys, monkeypatch, case):
    make, names = GGUF_CASES[case]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = make(tmp_path / "model.gguf")
    code, err = run_cli(capsys, "export", "--gguf", path, "-o", tmp_path / "out")
    line = error_line(err)
    assert code == 2, err
    assert str(path) in line and all(name in line for name in names), line
    assert not (tmp_path / "out").exists() and not _cache_entries(tmp_path / "cache")


def _cache_entries(cache) -> list[str]:
    """The converted-model entries the cache holds, scratch folders included."""
    models = cache / "edgepack" / "models"
    return [p.name for p in models.iterdir()] if models.exists() else []


def _bert_folder(folder):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return _bert_folder(tmp_path_factory.mktemp("bert") / "model")


def _config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


def _narrow(folder):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    name = "encoder.layer.1.intermediate.dense.weight"
    tensors[name] = tensors[name][:, :31].contiguous()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _truncate(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])


def _pickle_beside_a_decoy(folder):
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(tensors, folder / "pytorch_model.bin")      # weights-only, but a pickle
    save_file({"lora_A": torch.zeros(2, 2)}, folder / "adapter.safetensors")


def _huge_header(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes((2**62).to_bytes(8, "little") + weights.read_bytes()[8:])


def _shard_outside(folder):
    (folder / "model.safetensors").rename(folder / "weights.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"embeddings.word_embeddings.weight": "../elsewhere.safetensors"}}))


HF_CASES = {
    "config.json a JSON list": (lambda f: (f / "config.json").write_text("[1, 2]"),
                                "config.json", ["JSON list"]),
    "num_hidden_layers = 'two'": (_config(num_hidden_layers="two"), "config.json",
                                  ["num_hidden_layers", "'two'"]),
    "4096 layers": (_config(num_hidden_layers=4096), "config.json", ["num_hidden_layers"]),
    "three layers over two": (_config(num_hidden_layers=3), "model.safetensors",
                              ["'encoder.layer.2.", "num_hidden_layers = 3"]),
    "one layer over two": (_config(num_hidden_layers=1), "model.safetensors",
                           ["'encoder.layer.1.", "num_hidden_layers = 1"]),
    "16,384 wide over 32-wide tensors": (
        _config(hidden_size=16384, intermediate_size=65536), "model.safetensors",
        ["hidden_size = 16384", "[32]", "[16384]"]),
    "a tensor one column short": (_narrow, "model.safetensors",
                                  ["'encoder.layer.1.intermediate.dense.weight'", "[64, 31]"]),
    "code to run from the folder": (
        _config(model_type="remote-model", auto_map={"AutoConfig": "remote.Config"}),
        "config.json", ["cannot build"]),
    "a truncated model.safetensors": (_truncate, "model.safetensors", ["truncated"]),
    "a header length of 2**62": (_huge_header, "model.safetensors", ["header length"]),
    "a pickle beside a decoy adapter": (_pickle_beside_a_decoy, "model",
                                        ["adapter.safetensors", "pytorch_model.bin",
                                         "model.safetensors"]),
    "a shard outside the folder": (_shard_outside, "model.safetensors.index.json",
                                   ["'../elsewhere.safetensors'"]),
}


@pytest.mark.parametrize("case", list(HF_CASES))
def test_export_hf_refuses_a_hostile_folder_in_one_line(tmp_path, capsys, bert_folder, case):
    edit, file_name, names = HF_CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(bert_folder, folder)
    edit(folder)
    code, err = run_cli(capsys, "export", "--hf", folder, "--task", "feature-extraction",
                        "-o", tmp_path / "out")
    line = error_line(err)
    assert code == 2, err
    assert str(folder / file_name) in line or (file_name == "model" and str(folder) in line)
    assert all(name in line for name in names), line
    assert not (tmp_path / "out").exists()


def test_an_export_beyond_the_memory_available_is_refused_up_front(tmp_path, capsys,
                                                                    bert_folder, monkeypatch):
    monkeypatch.setattr("edgepack.core.memory_budget.available_bytes", lambda: 64 * 1024)
    code, err = run_cli(capsys, "export", "--hf", bert_folder, "--task", "feature-extraction",
                        "-o", tmp_path / "out")
    line = error_line(err)
    assert code == 2 and str(bert_folder) in line and "fp32 copies" in line, line
    assert not (tmp_path / "out").exists()


def test_a_conversion_beyond_the_memory_available_is_refused_up_front(tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr("edgepack.core.memory_budget.available_bytes", lambda: 64 * 1024)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = write_llama_gguf(tmp_path / "model.gguf", hidden=64, ffn=256)
    code, err = run_cli(capsys, "export", "--gguf", path, "-o", tmp_path / "out")
    line = error_line(err)
    assert code == 2 and str(path) in line and "fp32 copies" in line, line
    assert not (tmp_path / "out").exists() and not _cache_entries(tmp_path / "cache")


DP_RECIPE = """
name = "dp"
[model]
build = "edgepack.zoo:mnist1d_cnn"
args = {{ width = 8 }}
train_epochs = 1
dp = {{ epsilon = 4.0, delta = 1e-4, max_grad_norm = {value} }}
[data]
provider = "edgepack.zoo:mnist1d"
args = {{ samples = 600 }}
public = ["transfer", "calibration"]
[[stages]]
kind = "export"
"""


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_dp_clip_that_is_not_a_number_is_refused_before_the_run_folder(tmp_path, capsys,
                                                                        no_teacher, value):
    path = tmp_path / "dp.toml"
    path.write_text(textwrap.dedent(DP_RECIPE.format(value=value)))
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "run")
    line = error_line(err)
    assert code == 2 and "max_grad_norm" in line and "[model.dp]" in line, line
    assert not (tmp_path / "run").exists()


def test_a_recipe_builder_loading_a_local_folder_checks_it_first(tmp_path, bert_folder):
    from edgepack.zoo.minilm import minilm_embedder

    assert minilm_embedder(str(bert_folder)) is not None
    folder = tmp_path / "model"
    shutil.copytree(bert_folder, folder)
    _narrow(folder)
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'encoder.layer.1.interm"):
        minilm_embedder(str(folder))
