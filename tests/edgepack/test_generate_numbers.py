"""``edgepack generate`` and ``bench --generate`` on inputs that would crash, hang or print
garbage (issue 38, points 2, 4 and 6): a tokenizer whose ids reach past the model's vocabulary,
a prompt that is not UTF-8, a prompt whose attention would not fit in memory, budgets no
machine could finish, and a model whose logits are NaN. Bad input is one ``edgepack: error:``
line and exit 2, before any generation; NaN logits are exit 1 naming the output."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.edgepack.helpers import error_line, run_cli, run_cli_output

BILLION = str(10 ** 9)
CONFIG_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json",
                "generation_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def model(tiny_decoder):
    return tiny_decoder[1]


def _copy_decoder(model, folder, config: bool = True):
    """The tiny decoder's ONNX file and tokenizer in ``folder`` (``config``: its config.json
    too; without it the context length is unknown)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, folder / "model.onnx")
    for name in CONFIG_FILES:
        if (model.parent / name).is_file() and (config or name != "config.json"):
            shutil.copy(model.parent / name, folder / name)
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def no_config(model, tmp_path_factory):
    return _copy_decoder(model, tmp_path_factory.mktemp("no-config"), config=False)


@pytest.fixture(scope="module")
def nan_decoder(model, tmp_path_factory):
    """The tiny decoder with its embedding table NaN: every logit is NaN."""
    path = _copy_decoder(model, tmp_path_factory.mktemp("nan-decoder"))
    graph = onnx.load(str(path))
    for index, tensor in enumerate(graph.graph.initializer):
        if tensor.name == "model.embed_tokens.weight":
            nan = np.full(numpy_helper.to_array(tensor).shape, np.nan, np.float32)
            graph.graph.initializer[index].CopyFrom(numpy_helper.from_array(nan, tensor.name))
    onnx.save(graph, str(path))
    return path


@pytest.fixture(scope="module")
def word_level(tmp_path_factory):
    """A WordLevel tokenizer of about the model's size whose words are numbered from 5000:
    every id of the prompt is past the model's 320-token table."""
    folder = tmp_path_factory.mktemp("word-level")
    vocab = {"<unk>": 0, **{f"w{i}": i + 1 for i in range(299)},
             **{w: 5000 + i for i, w in enumerate("the quick brown fox jumps".split())}}
    (folder / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
        "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}}))
    return folder


@pytest.fixture(scope="module")
def shifted_bpe(model, tmp_path_factory):
    """The model's own byte-level BPE with every id moved up by 1000: the same size as the
    model's table, but none of its ids inside it."""
    folder = tmp_path_factory.mktemp("shifted-bpe")
    data = json.loads((model.parent / "tokenizer.json").read_text())
    data["model"]["vocab"] = {token: i + 1000 for token, i in data["model"]["vocab"].items()}
    for token in data["added_tokens"]:
        token["id"] += 1000
    (folder / "tokenizer.json").write_text(json.dumps(data))
    return folder


TOKENIZER_CASES = ["word_level", "shifted_bpe"]


@pytest.mark.parametrize("which", TOKENIZER_CASES)
def test_generate_refuses_a_tokenizer_past_the_vocabulary(which, model, request, capsys):
    folder = request.getfixturevalue(which)
    code, out, err = run_cli_output(capsys, "generate", model, "--tokenizer", folder,
                                    "--prompt", "the quick brown", "--max-new-tokens", "3")
    line = error_line(err)
    assert code == 2 and out == ""
    assert f"{folder / 'tokenizer.json'}" in line and "vocabulary of 320" in line


@pytest.mark.parametrize("which", TOKENIZER_CASES)
def test_bench_generate_refuses_a_tokenizer_past_the_vocabulary(which, model, request,
                                                                 tmp_path, capsys):
    folder = request.getfixturevalue(which)
    out = tmp_path / "gen.json"
    code, err = run_cli(capsys, "bench", "--generate", model, "--tokenizer", folder, "--json",
                        out, "--prompt-tokens", "4", "--new-tokens", "2", "--rounds", "1")
    line = error_line(err)
    assert code == 2 and f"{folder / 'tokenizer.json'}" in line and "vocabulary of 320" in line
    assert not out.exists()


def test_a_prompt_that_is_not_utf8_is_one_line(model, capsys):
    # bytes the command line could not decode reach Python as lone surrogates (PEP 383)
    code, out, err = run_cli_output(capsys, "generate", model, "--prompt",
                                    "the quick \udcff\udcfe brown")
    assert code == 2 and out == ""
    assert "--prompt is not UTF-8 text (byte 0xff at character 10)" in error_line(err)


def test_a_prompt_too_long_for_memory_is_refused_from_an_estimate(no_config, monkeypatch,
                                                                 capsys):
    """120 KB of text to a decoder without its config.json (no known context): the prefill's
    attention alone is tens of GB; refused before ONNX Runtime sees the prompt."""
    monkeypatch.setattr("edgepack.core.memory_budget.available_bytes", lambda: 8 * 2 ** 30)
    ran = []
    monkeypatch.setattr("edgepack.bench.decoder.Decoder.forward",
                        lambda *a, **k: ran.append(1) or (_ for _ in ()).throw(AssertionError))
    prompt = "The quick brown fox jumps over the lazy dog. " * 2700   # 121,500 bytes
    code, out, err = run_cli_output(capsys, "generate", no_config, "--prompt", prompt)
    line = error_line(err)
    assert code == 2 and out == "" and not ran
    assert re.search(r"a [\d,]+-token prompt and 64 new tokens on .*model.onnx needs about "
                     r"[\d,]+ MB \(KV cache [\d,]+ MB, prefill attention [\d,]+ MB for 4 heads",
                     line), line
    assert "8,192 MB available; give a shorter --prompt" in line


BUDGET_ERRORS = [
    (["generate", "{nc}", "--prompt", "Hello", "--max-new-tokens", BILLION],
     "--max-new-tokens 1,000,000,000 is beyond the bound of 131,072 tokens"),
    (["bench", "--generate", "{nc}", "--tokenizer", "{tok}", "--new-tokens", BILLION],
     "--new-tokens=1,000,000,000 is beyond the bound of 131,072 tokens"),
    (["bench", "--generate", "{nc}", "--tokenizer", "{tok}", "--prompt-tokens", BILLION],
     "--prompt-tokens=1,000,000,000 is beyond the bound of 131,072 tokens"),
    (["bench", "--generate", "{nc}", "--tokenizer", "{tok}", "--rounds", BILLION],
     "--rounds=1,000,000,000 is beyond the bound of 1,000 rounds"),
    (["bench", "--generate", "{nc}", "--tokenizer", "{tok}", "--warmup", BILLION],
     "bench.warmup=1,000,000,000 is beyond the bound of 1,000,000 runs"),
]


@pytest.mark.parametrize("argv, says", BUDGET_ERRORS, ids=[a[-2] for a, _ in BUDGET_ERRORS])
def test_a_generation_budget_without_a_known_context_has_a_bound(no_config, monkeypatch,
                                                                 tmp_path, capsys, argv, says):
    monkeypatch.setattr("edgepack.bench.decoder.Decoder.forward",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("it ran")))
    argv = [a.format(nc=no_config, tok=no_config.parent) for a in argv]
    if argv[0] == "bench":
        argv += ["--json", str(tmp_path / "gen.json")]
    code, out, err = run_cli_output(capsys, *argv)
    assert code == 2 and says in error_line(err), err
    assert out == "" and not (tmp_path / "gen.json").exists()


def test_generate_on_nan_logits_is_exit_1_naming_the_output(nan_decoder, capsys):
    code, out, err = run_cli_output(capsys, "generate", nan_decoder, "--prompt",
                                    "The quick brown", "--max-new-tokens", "5")
    assert code == 1 and out == ""
    assert f"{nan_decoder}: its output 'logits' holds NaN or Inf on the prompt" in err


def test_bench_generate_on_nan_logits_is_exit_1_and_writes_nothing(nan_decoder, tmp_path,
                                                                    capsys):
    out = tmp_path / "gen.json"
    code, err = run_cli(capsys, "bench", "--generate", nan_decoder, "--tokenizer",
                        nan_decoder.parent, "--json", out, "--prompt-tokens", "8",
                        "--new-tokens", "2", "--rounds", "1")
    assert code == 1 and "its output 'logits' holds NaN or Inf on the prompt" in err
    assert not out.exists()


def test_bench_on_nan_logits_is_exit_1_naming_the_output(nan_decoder, tmp_path, capsys):
    out = tmp_path / "r.json"
    code, err = run_cli(capsys, "bench", nan_decoder, "--json", out, "--min-runs", "1",
                        "--min-time", "0", "--warmup", "0")
    assert code == 1 and "(output 'logits', " in err and "hold NaN or Inf" in err
    assert not out.exists()
