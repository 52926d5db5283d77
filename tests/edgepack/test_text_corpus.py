"""The offline English corpus: prose filter, deduplication, a disjoint and stable split."""

from __future__ import annotations

import pytest

from edgepack.zoo.text_corpus import (build_corpus, docstrings_in_file, english_corpus,
                                      in_evaluation, is_prose, normalise, sentences_in)

PROSE = [f"The library opens its doors at {word} in the morning for every visitor."
         for word in ("seven", "eight", "nine", "ten", "eleven", "noon", "dawn", "six",
                      "five", "four", "three", "two")]


def test_prose_filter_keeps_sentences_and_drops_code_and_fragments():
    assert is_prose("Return the number of items in the container.")
    assert not is_prose(">>> x = f(1, 2) returns the sum of both values.")
    assert not is_prose("Too short.")
    assert not is_prose("lower case start is not a sentence we keep here.")
    assert not is_prose("Return {key: value} pairs for every entry in the mapping.")


def test_sentences_are_split_at_sentence_ends_across_wrapped_lines():
    text = ("Open the file in binary mode and read it.\nThe result is a bytes object of "
            "the whole file. Then close it.")
    assert sentences_in(text) == ["Open the file in binary mode and read it.",
                                  "The result is a bytes object of the whole file."]


def test_duplicates_are_dropped_on_their_normalised_form():
    texts = [PROSE[0], PROSE[0].upper().replace("THE", "The", 1), "  " + PROSE[0] + "  ",
             PROSE[1]]
    corpus = build_corpus(texts, eval_percent=50.0)
    everything = corpus["train"] + corpus["evaluation"]
    assert len(everything) == 2
    assert len({normalise(s) for s in everything}) == 2


def test_split_is_disjoint_deterministic_and_independent_of_order():
    first = build_corpus(PROSE, eval_percent=30.0)
    again = build_corpus(list(reversed(PROSE)), eval_percent=30.0)
    assert set(first["train"]).isdisjoint(first["evaluation"])
    assert set(first["evaluation"]) == set(again["evaluation"])
    assert first["evaluation"] and first["train"]  # 12 sentences at 30%: both sides non-empty
    for sentence in first["evaluation"]:
        assert in_evaluation(sentence, 30.0)
        assert in_evaluation(sentence.lower(), 30.0)  # the split follows the normalised form


def test_eval_percent_out_of_range_is_refused():
    with pytest.raises(ValueError, match="eval_percent"):
        build_corpus(PROSE, eval_percent=0.0)


def test_docstrings_are_read_without_importing(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text('"""Module text here."""\nraise SystemExit("imported!")\n'
                      'def f():\n    """Function text."""\n')
    assert docstrings_in_file(source) == ["Module text here.", "Function text."]


def test_corpus_is_cached_and_unknown_packages_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="not an installed package"):
        english_corpus(packages=("no_such_package_xyz",), cache=False)
    cached = tmp_path / "edgepack" / "corpus"
    cached.mkdir(parents=True)
    from edgepack.zoo.text_corpus import corpus_key

    (cached / f"english-{corpus_key((), 10.0)}.json").write_text(
        '{"train": ["A cached training sentence is here."], "evaluation": []}')
    assert english_corpus()["train"] == ["A cached training sentence is here."]
