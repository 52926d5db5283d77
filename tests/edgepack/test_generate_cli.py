"""``edgepack generate`` and ``edgepack bench --generate`` on the tiny Llama: what they print
and write, and one line with exit code 2 for each bad input."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from edgepack.bench.decoder import Decoder
from edgepack.bench.tokenizer import load_tokenizer
from tests.bench.conftest import matmul_add
from tests.edgepack.helpers import error_line, run_cli, run_cli_output

FAST = ["--prompt-tokens", "16", "--new-tokens", "3", "--rounds", "2"]


@pytest.fixture(scope="module")
def model(tiny_decoder):
    return tiny_decoder[1]


@pytest.fixture(scope="module")
def not_a_decoder(tmp_path_factory):
    return matmul_add(tmp_path_factory.mktemp("encoder") / "model.onnx")


@pytest.fixture(scope="module")
def bigger_tokenizer(model, tmp_path_factory):
    """The tiny tokenizer with 100 tokens added: more ids than the model has logits."""
    folder = tmp_path_factory.mktemp("bigger-tokenizer")
    tokenizer = load_tokenizer(model.parent).tokenizer
    tokenizer.add_tokens([f"extra{i}" for i in range(100)])
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_generate_streams_the_greedy_continuation(model, capsys):
    code, out, err = run_cli_output(capsys, "generate", model, "--prompt", "The quick brown",
                                    "--max-new-tokens", "12")
    assert code == 0, err
    tokenizer = load_tokenizer(model.parent)   # the default: the model's own folder
    ids = tokenizer.encode("The quick brown")
    tokens = list(Decoder(model).greedy(ids, 12, eos_ids=tokenizer.eos_ids))
    expected = tokenizer.decode(ids + tokens)[len(tokenizer.decode(ids)):]
    assert out == expected + "\n"


def test_bench_generate_prints_a_table_and_writes_json(model, tmp_path, capsys):
    out_json = tmp_path / "gen.json"
    code, out, err = run_cli_output(capsys, "bench", "--generate", model, model, "--tokenizer",
                                    model.parent, "--json", out_json, *FAST)
    assert code == 0, err
    assert "threads 1" in out and "prompt 16 tokens then 3 decode steps" in out
    assert "decode tok/s" in out and out.count("model.onnx") == 2
    results = json.loads(out_json.read_text())
    assert len(results) == 2 and all("edgepack_version" in r for r in results)
    assert results[0]["prompt_tokens"] == 16 and results[0]["runs"] == 2
    assert results[0]["decode_tokens_per_s"] > 0 and results[0]["size_bytes"] > 0
    assert results[0]["latency_ms"] == results[0]["token_ms"] and results[0]["batch"] == 1
    # the file is edgepack's own now: written again without --overwrite
    assert run_cli_output(capsys, "bench", "--generate", model, "--tokenizer", model.parent,
                          "--json", out_json, *FAST)[0] == 0


def test_bench_generate_refuses_a_user_json(model, tmp_path, capsys):
    theirs = tmp_path / "theirs.json"
    theirs.write_text("{}")
    code, err = run_cli(capsys, "bench", "--generate", model, "--tokenizer", model.parent,
                        "--json", theirs, *FAST)
    assert code == 2 and "theirs.json" in error_line(err)
    assert theirs.read_text() == "{}"


BENCH_ERRORS = [
    ("not-decoder", ["--tokenizer", "{tok}"], "is not a decoder with a KV cache: expected "
                                              "inputs input_ids, attention_mask"),
    ("model", ["--tokenizer", "{big}"], "tokenizer .*tokenizer.json has 420 tokens with ids up "
                                        "to 419, but .* has a vocabulary of 320"),
    ("model", ["--tokenizer", "{tok}", "--prompt-tokens", "300"],
     "--prompt-tokens 300 with --new-tokens 32 needs 333 positions, more than the context "
     ".*\\(256"),
    ("model", [], "--generate needs --tokenizer DIR"),
    ("model", ["--tokenizer", "{tok}", "--rounds", "0"], "--rounds must be >= 1, got 0"),
    ("model", ["--tokenizer", "{tok}", "--batch", "4"], "--batch: not used by --generate"),
    ("model", ["--tokenizer", "{empty}"], "holds no tokenizer.json"),
]


@pytest.mark.parametrize("which, flags, message", BENCH_ERRORS)
def test_bench_generate_bad_input(which, flags, message, model, not_a_decoder,
                                  bigger_tokenizer, tmp_path, capsys):
    path = not_a_decoder if which == "not-decoder" else model
    places = {"tok": model.parent, "big": bigger_tokenizer, "empty": tmp_path}
    flags = [f.format(**places) for f in flags]
    code, err = run_cli(capsys, "bench", "--generate", path, *flags)
    assert code == 2
    assert re.search(message, error_line(err)), err


def test_tokenizer_without_generate_is_refused(model, capsys):
    code, err = run_cli(capsys, "bench", model, "--tokenizer", model.parent)
    assert code == 2 and "--tokenizer is read by --generate only" in error_line(err)


GENERATE_ERRORS = [
    ("model", ["--prompt", "   "], "--prompt is empty"),
    ("model", ["--prompt", "The quick brown fox jumps over the lazy dog. " * 40],
     "--prompt is \\d+ tokens; the model's context is 256 tokens"),
    ("not-decoder", ["--prompt", "Hello", "--tokenizer", "{tok}"],
     "is not a decoder with a KV cache: expected inputs input_ids"),
    ("model", ["--prompt", "Hello", "--tokenizer", "{big}"], "they are not a pair"),
    ("not-decoder", ["--prompt", "Hello"], "no tokenizer.json beside .*; give --tokenizer DIR"),
    ("model", ["--prompt", "Hello", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
]


@pytest.mark.parametrize("which, flags, message", GENERATE_ERRORS)
def test_generate_bad_input(which, flags, message, model, not_a_decoder, bigger_tokenizer,
                            capsys):
    path = not_a_decoder if which == "not-decoder" else model
    flags = [f.format(tok=model.parent, big=bigger_tokenizer) for f in flags]
    code, err = run_cli(capsys, "generate", path, *flags)
    assert code == 2
    assert re.search(message, error_line(err)), err


def test_generate_stops_at_the_context(model, tmp_path, capsys):
    """A prompt near the context gets only the tokens that fit, and says so."""
    folder = tmp_path / "short-context"
    shutil.copytree(model.parent, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 12}))
    tokenizer = load_tokenizer(folder)
    prompt = tokenizer.decode(tokenizer.encode("The quick brown fox jumps over the lazy dog.")[:8])
    code, out, err = run_cli_output(capsys, "generate", folder / "model.onnx", "--prompt", prompt,
                                    "--max-new-tokens", "50")
    assert code == 0, err
    room = 12 - len(tokenizer.encode(prompt))
    assert f"leaves room for {room} new tokens" in err
    ids = tokenizer.encode(prompt)
    tokens = list(Decoder(folder / "model.onnx").greedy(ids, room, eos_ids=tokenizer.eos_ids))
    assert out == tokenizer.decode(ids + tokens)[len(tokenizer.decode(ids)):] + "\n"
