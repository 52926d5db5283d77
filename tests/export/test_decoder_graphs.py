"""How a decoder's graph is built (edgepack.export.decoder_graphs): the fused graph and the
traced one give the same model, the choice is stated and never swapped silently, and the
fused builder is handed the rotary embedding it would otherwise miss under transformers 4."""

from __future__ import annotations

import collections

import onnx
import pytest

from edgepack.export.decoder_graphs import DECODER_GRAPHS, choose_graph
from edgepack.export.hf import DECODER_TASK, export_hf
from edgepack.export.parity import ParityError
from tests.decoder_architectures import make_architecture_folder
from tests.edgepack.helpers import error_line, run_cli
from tests.tiny_decoder import train_tiny_tokenizer

pytest.importorskip("optimum.exporters.onnx")
pytest.importorskip("mobius", reason="pip install 'edgepack[llm]'")


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    train_tiny_tokenizer(root / "tokenizer")
    return make_architecture_folder("llama", root / "hf", root / "tokenizer")


def _ops(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_fused_and_traced_graphs_are_the_same_model(llama_folder, tmp_path):
    fused = export_hf(llama_folder, DECODER_TASK, tmp_path / "fused", graph="fused")
    traced = export_hf(llama_folder, DECODER_TASK, tmp_path / "traced", graph="traced")
    assert fused.record["parity"]["ok"] and traced.record["parity"]["ok"]
    assert fused.record["exporter"] == "mobius-onnx" and traced.record["exporter"] == "optimum"
    fused_ops, traced_ops = _ops(fused.artifact), _ops(traced.artifact)
    layers = 2
    assert fused_ops["GroupQueryAttention"] == layers and "Softmax" not in fused_ops
    assert traced_ops["Softmax"] == layers and "GroupQueryAttention" not in traced_ops
    # one packed QKV projection per layer: q, k, v, o, gate, up, down -> 5 MatMuls, + lm_head
    assert fused_ops["MatMul"] == 5 * layers + 1
    assert sum(fused_ops.values()) < sum(traced_ops.values()) / 5
    assert fused.record["graph"]["nodes"] == sum(fused_ops.values())


def test_auto_takes_the_fused_graph_where_it_serves_and_says_why():
    spec, why = choose_graph("auto", "llama")
    assert spec.name == "fused" and "llama" in why
    spec, why = choose_graph("auto", "gpt2")
    assert spec.name == "traced"


def test_a_graph_named_for_a_type_it_does_not_serve_is_refused_not_swapped(tmp_path, capsys):
    root = tmp_path
    train_tiny_tokenizer(root / "tokenizer")
    folder = make_architecture_folder("gpt2", root / "hf", root / "tokenizer")
    code, err = run_cli(capsys, "export", "--hf", folder, "--task", DECODER_TASK,
                        "--graph", "fused", "-o", root / "out")
    assert code == 2
    assert "graph 'fused' is not built for model type 'gpt2'" in error_line(err)
    assert "use graph 'traced' or 'auto'" in error_line(err)
    assert not (root / "out" / "model.onnx").exists()


@pytest.mark.parametrize("argv, expected", [
    (("--model", "edgepack.zoo:mnist1d_cnn", "--input-shape", "1,1,40", "--graph", "fused"),
     "--graph goes with a decoder"),
    (("--hf", "{folder}", "--task", "feature-extraction", "--graph", "traced"),
     "graph 'traced' applies to task text-generation-with-past"),
])
def test_graph_outside_a_decoder_is_refused(llama_folder, tmp_path, capsys, argv, expected):
    argv = [a.format(folder=llama_folder) for a in argv]
    code, err = run_cli(capsys, "export", *argv, "-o", tmp_path / "out.onnx")
    assert code == 2 and expected in error_line(err)


def test_a_recipe_graph_must_be_a_known_builder():
    from edgepack.export.decoder_export import DecoderExportConfig

    assert DecoderExportConfig(graph="traced").graph == "traced"
    with pytest.raises(ValueError, match="export-decoder.graph must be one of auto, fused, "
                                         "traced, got 'fast'"):
        DecoderExportConfig(graph="fast")


def test_without_the_stated_rope_the_fused_graph_fails_parity(llama_folder, tmp_path,
                                                              monkeypatch):
    """Under transformers 4 a config with the default rope_theta does not state its RoPE, and
    the builder leaves the rotary embedding out: the parity rule catches it (exit 1), and the
    stated rope_parameters are what make the fused graph right."""
    from edgepack.export.decoder_graphs import fused

    assert fused.rope_parameters(__import__("transformers").AutoConfig.from_pretrained(
        str(llama_folder))) == {"rope_type": "default", "rope_theta": 10000.0}
    monkeypatch.setattr(fused, "rope_parameters", lambda config: None)
    with pytest.raises(ParityError, match="logits"):
        export_hf(llama_folder, DECODER_TASK, tmp_path / "out", graph="fused")
    assert not (tmp_path / "out" / "model.onnx").exists()
    assert "rope_parameters" not in (llama_folder / "config.json").read_text()


def test_the_builders_are_a_registry():
    assert DECODER_GRAPHS.names() == ("fused", "traced")
    assert DECODER_GRAPHS.get("traced").model_types is None   # the one that serves every type


def test_a_new_decoder_graph_is_one_file(llama_folder, tmp_path, capsys):
    from tests.registry_examples import ExampleFile

    header = "from edgepack.export.decoder_graphs import DECODER_GRAPHS, DecoderGraph"
    with ExampleFile(tmp_path, "edgepack.export.decoder_graphs", DECODER_GRAPHS,
                     "traced_opset17", header) as example:
        assert example.added() == {"traced-17"}
        code, err = run_cli(capsys, "export", "--hf", llama_folder, "--task", DECODER_TASK,
                            "--graph", "traced-17", "-o", tmp_path / "out")
        assert choose_graph("auto", "llama")[0].name == "fused"   # order: it comes last
    assert code == 0, err
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert "traced-17" not in DECODER_GRAPHS.names()   # gone with its file
