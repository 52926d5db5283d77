"""The tokenizer beside a decoder: special ids from its files, the vocabulary check, and
streaming text that prints a multi-byte character once it is whole."""

from __future__ import annotations

import json
import shutil

import pytest

from edgepack.bench.tokenizer import TextStream, check_vocabulary, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_decoder):
    return load_tokenizer(tiny_decoder[1].parent)


def test_loads_with_special_ids(tokenizer):
    assert tokenizer.vocab_size > 100
    assert tokenizer.bos_id == 1 and tokenizer.eos_ids == (2,)
    text = "The quick brown fox"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_generation_config_wins_over_tokenizer_config(tiny_decoder, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_decoder[1].parent / name, tmp_path / name)
    assert load_tokenizer(tmp_path).eos_ids == (2,)          # from "</s>" in tokenizer_config
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    assert load_tokenizer(tmp_path).eos_ids == (2, 0)


def test_folder_without_tokenizer_json_is_refused(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path} holds no tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")


def test_broken_tokenizer_json_is_refused(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a tokenizers file"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("logits, message", [
    (100, "tokens with ids up to .*, but .* has a vocabulary of 100 \\(ids 0 to 99\\): "
          "they are not a pair"),
    (10_000, "tokens but .* has a vocabulary of 10,000 \\(under 90% of it\\)"),
])
def test_vocabulary_mismatch_names_both_sizes(tokenizer, logits, message):
    with pytest.raises(ValueError, match=f"tokenizer .*tokenizer.json has "
                                         f"{tokenizer.vocab_size:,} {message}"):
        check_vocabulary(tokenizer, logits)


def test_vocabulary_padded_logits_are_accepted(tokenizer):
    check_vocabulary(tokenizer, tokenizer.vocab_size)
    check_vocabulary(tokenizer, tokenizer.vocab_size + 10)   # tables padded to a multiple


def test_stream_holds_back_a_split_character(tokenizer):
    ids = tokenizer.encode("café")
    # byte-level BPE never saw "é" in training: its two UTF-8 bytes are two tokens
    assert tokenizer.decode(ids[:-1]).endswith("\ufffd")
    stream = TextStream(tokenizer, tokenizer.encode("The"))
    pieces = [stream.add(i) for i in tokenizer.encode(" café")]
    assert pieces[-2] == "" and pieces[-1].endswith("é")
    assert "".join(pieces) + stream.finish() == " café"


def test_stream_prints_suffixes_that_add_up(tokenizer):
    text = " Every stage is kept only if it is faster."
    prompt = tokenizer.encode("Hello")
    stream = TextStream(tokenizer, prompt)
    out = "".join(stream.add(i) for i in tokenizer.encode(text)) + stream.finish()
    assert out == tokenizer.decode(prompt + tokenizer.encode(text))[len("Hello"):]
