"""Decoders of many architectures, end to end: each tiny random model is exported with its KV
cache (the fused graph for the model types it serves, the traced one for the others), passes
the derived parity rule (sliding windows checked past the window), runs in
onnxruntime-genai from the written folder with the same greedy tokens as transformers, and
is quantized by the command line with explicit int4 flags, which the written file obeys."""

from __future__ import annotations

import json

import onnx
import pytest

from edgepack.export.decoder_graphs.fused import FUSED_MODEL_TYPES
from edgepack.export.genai import GENAI_CONFIG, GENAI_MODEL_TYPE
from edgepack.export.hf import DECODER_TASK, export_hf
from tests.decoder_architectures import (ARCHITECTURES, GPT2_CONTEXT, make_architecture_folder,
                                         tiny_config, transformers_greedy)
from tests.edgepack.helpers import run_cli_output
from tests.tiny_decoder import genai_greedy, train_tiny_tokenizer

pytest.importorskip("optimum.exporters.onnx")
pytest.importorskip("onnxruntime_genai", reason="pip install 'edgepack[llm]'")

PROMPT = [1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]   # 12 tokens: past a window of 8
NEW_TOKENS = 8
INT4_FLAGS = ("--mode", "int4", "--block-size", "32", "--algorithm", "rtn", "--symmetric",
              "--accuracy-level", "0", "--no-search", "--no-speed-check",
              "--min-top1-agreement", "0", "--max-perplexity-ratio", "1.5")


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    train_tiny_tokenizer(folder)
    return folder


def _int4_nodes(path) -> list[dict]:
    """Every MatMulNBits / GatherBlockQuantized: its attributes and input count."""
    graph = onnx.load(str(path)).graph
    return [{"op": n.op_type, "inputs": len(n.input),
             **{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}}
            for n in graph.node if n.op_type in ("MatMulNBits", "GatherBlockQuantized")]


def _tied_copies(path) -> int:
    """How many initializers hold the (vocab x hidden) embedding or its transpose."""
    shapes = [tuple(i.dims) for i in onnx.load(str(path)).graph.initializer]
    return sum(1 for s in shapes if sorted(s) == [64, 320])


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_architecture_exports_runs_in_genai_and_quantizes_as_asked(
        model_type, tokenizer_folder, tmp_path, capsys):
    folder = make_architecture_folder(model_type, tmp_path / "hf", tokenizer_folder)
    config = tiny_config(model_type)

    result = export_hf(folder, DECODER_TASK, tmp_path / "onnx")
    parity = result.record["parity"]
    assert parity["ok"] and parity["rule"]["reference"] == "torch float64", parity["lines"]
    fused = model_type in FUSED_MODEL_TYPES
    assert result.record["graph"]["name"] == ("fused" if fused else "traced")
    ops = {n.op_type for n in onnx.load(str(result.artifact)).graph.node}
    assert ("GroupQueryAttention" in ops) == fused
    windowed = any("sliding window of" in c["title"] for c in parity["cases"])
    assert windowed == (model_type in ("mistral", "qwen2", "gemma2", "gemma3_text"))
    if getattr(config, "tie_word_embeddings", False):
        assert _tied_copies(result.artifact) == 1     # one copy on disk

    genai = json.loads((result.artifact.parent / GENAI_CONFIG).read_text())
    assert genai["model"]["type"] == GENAI_MODEL_TYPE
    expected_context = GPT2_CONTEXT if model_type == "gpt2" else 256
    assert genai["model"]["context_length"] == expected_context
    expected = transformers_greedy(folder, PROMPT, NEW_TOKENS)
    assert genai_greedy(result.artifact.parent, PROMPT, NEW_TOKENS, exact=True) == expected

    out = tmp_path / "int4" / "model.onnx"
    code, printed, _ = run_cli_output(capsys, "quantize", result.artifact, "-o", out,
                                      *INT4_FLAGS)
    assert code == 0, printed
    nodes = _int4_nodes(out)
    matmuls = [n for n in nodes if n["op"] == "MatMulNBits"]
    assert matmuls and all(n["block_size"] == 32 and n["bits"] == 4 for n in nodes)
    assert all(n["inputs"] == 3 for n in matmuls)           # symmetric: no zero points
    assert all(n.get("accuracy_level", 0) == 0 for n in matmuls)
    assert (out.parent / GENAI_CONFIG).is_file() and (out.parent / "tokenizer.json").is_file()
    assert len(genai_greedy(out.parent, PROMPT, NEW_TOKENS, exact=True)) == NEW_TOKENS


def test_a_window_the_graph_ignores_fails_parity(tokenizer_folder, tmp_path):
    """The sliding-window cases catch a graph whose window is wrong: the same weights without
    a window in torch differ from the exported graph past the window."""
    from edgepack.export.decoder_parity import check_decoder_parity
    from tests.decoder_architectures import tiny_model

    folder = make_architecture_folder("mistral", tmp_path / "hf", tokenizer_folder)
    exported = export_hf(folder, DECODER_TASK, tmp_path / "onnx").artifact
    no_window = tiny_model("mistral")
    no_window.config.sliding_window = None
    for module in no_window.modules():
        if hasattr(module, "sliding_window"):
            module.sliding_window = None
    parity = check_decoder_parity(no_window, exported)
    assert not parity["ok"]
    assert any("\u2717 logits" in line and "past" in line for line in parity["lines"])


@pytest.fixture(scope="module")
def gpt2_export(tokenizer_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2")
    folder = make_architecture_folder("gpt2", root / "hf", tokenizer_folder)
    return export_hf(folder, DECODER_TASK, root / "onnx").artifact


LONG_PROMPT = " ".join(["The quick brown fox jumps over the lazy dog."] * 8)   # > 48 tokens


@pytest.mark.parametrize("args", [
    ("generate", "{model}", "--prompt", LONG_PROMPT),
    ("bench", "--generate", "{model}", "--tokenizer", "{folder}", "--prompt-tokens", "40",
     "--new-tokens", "16", "--rounds", "1"),
])
def test_gpt2_past_its_learned_context_is_refused_up_front(gpt2_export, capsys, args):
    """GPT-2's context is its n_positions (48 here): past it is one line and exit 2, not a
    Gather out of range inside ONNX Runtime."""
    from tests.edgepack.helpers import error_line, run_cli

    argv = [a.format(model=gpt2_export, folder=gpt2_export.parent) for a in args]
    code, err = run_cli(capsys, *argv)
    assert code == 2
    line = error_line(err)
    assert any(f"{GPT2_CONTEXT}{tail}" in line for tail in (" tokens", ")"))


def test_gpt2_generation_stops_at_its_context(gpt2_export, capsys):
    from tests.edgepack.helpers import run_cli

    code, err = run_cli(capsys, "generate", gpt2_export, "--prompt", "The quick brown fox",
                        "--max-new-tokens", "200")
    assert code == 0 and f"the context of {GPT2_CONTEXT} tokens leaves room for" in err
