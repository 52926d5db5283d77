"""A decoder with a KV cache is packaged and benchmarked on generated inputs that respect
its cache layout (issue 38, point 2): the attention mask covers the cached and the new
tokens, and the position ids continue after the cache. Generated independently, the mask was
as short as the new tokens and the positions indexed past a table: exit 3 on valid input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort

from edgepack.bench.inputs import generate_inputs, token_vocab_sizes
from tests.edgepack.helpers import run_cli


def test_generated_feeds_follow_the_cache_layout(tiny_decoder):
    session = ort.InferenceSession(str(tiny_decoder[1]), providers=["CPUExecutionProvider"])
    vocab = token_vocab_sizes(onnx.load(str(tiny_decoder[1]), load_external_data=False))
    feeds = generate_inputs(session, 2, symbolic_dims=8, vocab_sizes=vocab)
    past = feeds["past_key_values.0.key"].shape[2]
    new = feeds["input_ids"].shape[1]
    assert feeds["attention_mask"].shape == (2, past + new)
    assert (feeds["position_ids"] == np.arange(past, past + new)).all()
    session.run(None, feeds)   # ONNX Runtime takes them


def test_package_of_a_decoder_with_a_kv_cache(tiny_decoder, tmp_path, capsys):
    out = tmp_path / "pkg"
    code, err = run_cli(capsys, "package", tiny_decoder[1], "-o", out)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["ok"] and (out / "model.ort").is_file()
    inputs = {i["name"] for i in manifest["inputs"]}
    assert {"input_ids", "attention_mask", "past_key_values.0.key"} <= inputs


def test_bench_of_a_decoder_on_generated_inputs(tiny_decoder, tmp_path, capsys):
    out = tmp_path / "r.json"
    code, err = run_cli(capsys, "bench", tiny_decoder[1], "--json", out, "--min-runs", "2",
                        "--min-time", "0", "--warmup", "1")
    assert code == 0, err
    shapes = json.loads(out.read_text())[0]["input_shapes"]
    assert shapes["attention_mask"][1] == (shapes["past_key_values.0.key"][2]
                                           + shapes["input_ids"][1])
