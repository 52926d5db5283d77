"""Exporting a decoder with its KV cache: Optimum's names (both graphs), parity on a prefill and
on decode steps with a growing cache, and the files onnxruntime-genai needs."""

import json

import numpy as np
import pytest

from edgepack.bench.decoder import Decoder
from edgepack.export.decoder_parity import check_decoder_parity
from edgepack.export.genai import GENAI_CONFIG, write_deploy_files
from edgepack.export.hf import DECODER_TASK, export_hf
from tests.tiny_decoder import tiny_llama

pytest.importorskip("optimum.exporters.onnx")


@pytest.fixture(scope="module")
def exported(tiny_decoder, tmp_path_factory):
    hf_folder, _ = tiny_decoder
    out = tmp_path_factory.mktemp("export") / "decoder"
    return hf_folder, export_hf(hf_folder, DECODER_TASK, out)


@pytest.mark.parametrize("graph, first_inputs", [
    ("fused", ["input_ids", "attention_mask"]),     # positions come from the mask
    ("traced", ["input_ids", "attention_mask", "position_ids"]),
])
def test_export_has_the_ecosystem_names(tiny_decoder, tmp_path, graph, first_inputs):
    result = export_hf(tiny_decoder[0], DECODER_TASK, tmp_path / "decoder", graph=graph)
    decoder = Decoder(result.artifact)
    names = [i.name for i in decoder.session.get_inputs()]
    assert names[:len(first_inputs)] == first_inputs
    assert names[len(first_inputs)] == "past_key_values.0.key"
    assert {f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")} <= set(names)
    outputs = [o.name for o in decoder.session.get_outputs()]
    assert outputs[0] == "logits" and "present.1.value" in outputs


def test_parity_walks_prefill_and_decode_steps(exported):
    _, result = exported
    parity = result.record["parity"]
    assert parity["ok"] and parity["cases"] == [{"prompt_tokens": 12, "decode_steps": 4,
                                                 "title": ""}]
    assert parity["rule"]["reference"] == "torch float64"
    labels = [o["label"] for o in parity["outputs"] if o["name"] == "logits"]
    assert labels[0] == "prefill, 12 tokens"
    assert labels[1:] == [f"decode step {k}, past {11 + k}" for k in range(1, 5)]
    assert any(o["name"] == "present.1.key" for o in parity["outputs"])


def test_parity_catches_a_different_model(exported):
    _, result = exported
    other = tiny_llama(vocab_size=Decoder(result.artifact).vocab_size, seed=1)
    parity = check_decoder_parity(other, result.artifact)
    assert not parity["ok"]
    assert any(line.lstrip().startswith("\u2717 logits (prefill") for line in parity["lines"])


@pytest.mark.parametrize("layer, share", [(0, 0.01), (1, 0.01)])
def test_parity_fails_a_model_with_one_layer_perturbed_by_one_percent(exported, layer, share):
    """One layer's MLP weights off by 1% (seeded noise of 1% of each weight's size) is far
    beyond the derived tolerance, on every logits step; the untouched model passes."""
    from transformers import AutoModelForCausalLM

    from tests.decoder_architectures import perturb_one_layer

    hf_folder, result = exported
    model = AutoModelForCausalLM.from_pretrained(str(hf_folder)).eval()
    assert check_decoder_parity(model, result.artifact)["ok"]
    perturb_one_layer(model, layer, share, seed=layer)
    parity = check_decoder_parity(model, result.artifact)
    assert not parity["ok"]
    logits = [o for o in parity["outputs"] if o["name"] == "logits"]
    assert all(not o["ok"] and o["error"] > 10 * o["allowed"] for o in logits)


def test_deploy_files_follow_the_graph(exported, tmp_path):
    hf_folder, result = exported
    written = write_deploy_files(result.artifact, hf_folder)
    assert "tokenizer.json" in written and GENAI_CONFIG in written
    config = json.loads((result.artifact.parent / GENAI_CONFIG).read_text())
    decoder = config["model"]["decoder"]
    assert decoder["filename"] == "model.onnx"
    assert (decoder["num_hidden_layers"], decoder["num_key_value_heads"],
            decoder["head_size"]) == (2, 2, 16)
    assert decoder["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert config["search"]["past_present_share_buffer"] is False
    with pytest.raises(ValueError, match="no tokenizer.json"):
        write_deploy_files(result.artifact, tmp_path)


def test_onnxruntime_genai_generates_our_greedy_tokens(exported):
    pytest.importorskip(
        "onnxruntime_genai", reason="onnxruntime-genai is not installed: pip install "
        "'edgepack[llm]' (it needs the CPU onnxruntime package, so not beside edgepack[gpu])")
    from tests.tiny_decoder import genai_greedy

    hf_folder, result = exported
    write_deploy_files(result.artifact, hf_folder)
    prompt = [5, 17, 40, 99, 3]
    theirs = genai_greedy(result.artifact.parent, prompt, 12)
    ours = list(Decoder(result.artifact).greedy(prompt, len(theirs)))
    assert theirs == ours and len(ours) == 12


def test_export_refuses_a_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no .safetensors"):
        export_hf(tmp_path, DECODER_TASK, tmp_path / "out")


def test_exported_logits_match_torch_on_a_long_prompt(exported):
    import torch
    from transformers import AutoModelForCausalLM

    hf_folder, result = exported
    model = AutoModelForCausalLM.from_pretrained(str(hf_folder)).eval()
    ids = np.arange(3, 103, dtype=np.int64) % Decoder(result.artifact).vocab_size
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(ids)[None]).logits[0].numpy()
    got = Decoder(result.artifact).sequence_logits(ids)
    assert np.abs(got - expected).max() < 1e-3


def test_a_symbolic_head_size_is_read_from_the_configs_beside(exported, tmp_path):
    """onnxruntime-genai's builder leaves the cache's head axis symbolic."""
    import onnx

    hf_folder, result = exported
    model = onnx.load(str(result.artifact))
    for value in [*model.graph.input, *model.graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.shape.dim[3].dim_param = "kv_cache_dim"
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(ValueError, match="fixed heads and head size"):
        Decoder(tmp_path / "model.onnx")
    (tmp_path / "config.json").write_text(json.dumps(
        {"hidden_size": 64, "num_attention_heads": 4}))
    decoder = Decoder(tmp_path / "model.onnx")
    assert decoder.layout.head_dim == 16
    assert list(decoder.greedy([5, 17, 40], 4)) == list(
        Decoder(result.artifact).greedy([5, 17, 40], 4))
