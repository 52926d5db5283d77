"""The embedding path end to end on a tiny random BERT (no download): distil a 2-layer student
from a 4-layer teacher, export it with token inputs, fuse, quantize, and judge every stage by
cosine and Spearman against the teacher."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgepack.bench.runner import BenchConfig
from edgepack.compress.distill import distill_config
from edgepack.compress.quantize import quantize_config
from edgepack.zoo.minilm import TokenBatches, token_data, tokenize
from tests.tiny_models import tiny_bert_embedder
from edgepack.pipeline.run import run_pipeline
from edgepack.bench.embedding_quality import embedding_quality, pairwise_spearman
from edgepack.pipeline.metric_kinds import metric_settings
from edgepack.export.fuse_transformer import FuseConfig
from edgepack.export.torch_export import ExportConfig

SENTENCES = [
    "the cat sat on the mat", "a dog ran in the park", "the sun is warm today",
    "rain fell on the quiet town", "she reads a book at night", "he plays the old piano",
    "birds sing in the tall trees", "the river runs to the sea", "we eat bread and cheese",
    "the train left the station", "snow covers the high hills", "the child drew a red house",
]

EXPORT = ExportConfig(exporter="torchscript", opset=17, input_names=("input_ids", "attention_mask"),
                      output_names=("sentence_embedding",), dynamic_axes=(1,))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A BERT WordPiece tokenizer over the test sentences' words, written locally."""
    from transformers import BertTokenizerFast

    words = sorted({w for s in SENTENCES for w in s.split()})
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab))


def test_pairwise_spearman_is_one_for_a_rescaled_copy_and_falls_with_noise():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(20, 8))
    assert pairwise_spearman(3.0 * reference, reference) == pytest.approx(1.0)
    noisy = embedding_quality(reference + rng.normal(size=reference.shape), reference)
    assert noisy["spearman"] < 0.9 and noisy["mean_cosine"] < 0.9


def test_metric_spec_rejects_unknown_kind_and_out_of_range_thresholds():
    with pytest.raises(ValueError, match="metric kind 'bleu'"):
        metric_settings("bleu")
    with pytest.raises(ValueError, match="min_cosine"):
        metric_settings("embedding", min_cosine=1.5)


def test_embedding_pipeline_end_to_end(tmp_path, tokenizer):
    torch.manual_seed(0)
    teacher = tiny_bert_embedder(hidden=32, layers=4, heads=2, intermediate=64,
                                 vocab_size=tokenizer.vocab_size)
    data = token_data(tokenizer, SENTENCES[:8], SENTENCES[8:], SENTENCES[:2], max_length=16,
                      train_max_length=12, batch_size=4)
    held_out = ["the cat ran in the park", "a dog sat on the old mat", "the sun fell on the sea",
                "she plays the red piano at night"]       # in neither train nor evaluation
    data["validation"] = TokenBatches(tokenize(tokenizer, held_out, 16, fixed=False), 3)
    stages = [distill_config(objective="embedding", student_init="every-kth-layer",
                            keep_every=2, epochs=2, lr=1e-3, batch_size=4,
                            length_grouped=True, freeze=("encoder.embeddings.word_embeddings",)),
              EXPORT,
              FuseConfig(),
              quantize_config(mode="dynamic", per_channel=True)]
    metric = metric_settings("embedding", min_cosine=-1.0, min_spearman=-1.0)
    report = run_pipeline(teacher, stages, tmp_path / "run", data, metric=metric,
                          bench_config=BenchConfig(min_runs=3, warmup=1, min_time_s=0.0),
                          progress=False, log=lambda _: None)
    assert report["metric"]["kind"] == "embedding"
    assert report["teacher"]["mean_cosine"] == pytest.approx(1.0, abs=1e-4)
    for stage in report["stages"]:
        assert "mean_cosine" in stage and "spearman" in stage, stage
        assert stage.get("failed") is not True, stage
    distill, export = report["stages"][0], report["stages"][1]
    assert distill["kept"] and export["kept"]
    words = teacher.encoder.embeddings.word_embeddings.weight
    assert distill["record"]["frozen_params"] == words.numel()
    assert distill["params"] < report["teacher"]["params"]
    # The exported student takes token ids and mask, with free batch and sequence axes.
    session = ort.InferenceSession(str(tmp_path / "run" / export["artifact"]))
    inputs = session.get_inputs()
    assert [i.name for i in inputs] == ["input_ids", "attention_mask"]
    assert all(isinstance(d, str) for d in inputs[0].shape)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["stages"][-1]["kind"] == "quantize"
    assert (tmp_path / "run" / "tradeoff.png").is_file()
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "Spearman" in markdown
    # the student's learning curve on the validation rows: one point per epoch, in the report
    curve = distill["record"]["learning_curve"]
    assert [p["epoch"] for p in curve] == [1, 2]
    assert all(-1 <= p["validation_cosine"] <= 1 and -1 <= p["validation_spearman"] <= 1
               for p in curve)
    assert "## Learning curve" in markdown
    assert f"| 2 | {curve[1]['loss']:.4f} | {curve[1]['validation_cosine']:.4f} |" in markdown


def test_embedding_keep_rule_drops_a_stage_below_the_minimum(tmp_path, tokenizer):
    teacher = tiny_bert_embedder(hidden=32, layers=4, heads=2, intermediate=64,
                                 vocab_size=tokenizer.vocab_size)
    data = token_data(tokenizer, SENTENCES[:8], SENTENCES[8:], SENTENCES[:2], max_length=16,
                      train_max_length=12, batch_size=4)
    # A one-layer student of a four-layer teacher, untrained (0 epochs), is not the teacher.
    stages = [distill_config(objective="embedding", student_init="every-kth-layer",
                            keep_every=4, epochs=0, batch_size=4), EXPORT]
    report = run_pipeline(teacher, stages, tmp_path / "run", data,
                          metric=metric_settings("embedding", min_cosine=1.0,
                                            min_spearman=0.0),
                          bench_config=BenchConfig(min_runs=3, warmup=1, min_time_s=0.0),
                          progress=False, log=lambda _: None)
    stage = report["stages"][0]
    assert stage["mean_cosine"] < 1.0
    assert not stage["kept"] and "min_cosine 1.0000" in stage["reason"], stage["reason"]


def test_recipe_metric_table_round_trips_and_names_bad_keys(tmp_path):
    from edgepack.pipeline.recipe import load_recipe, recipe_from_dict, to_toml

    recipe = load_recipe("examples/minilm.toml")
    assert recipe.metric == metric_settings("embedding", min_cosine=0.95, min_spearman=0.95)
    (tmp_path / "again.toml").write_text(to_toml(recipe))
    assert load_recipe(tmp_path / "again.toml").metric == recipe.metric
    with pytest.raises(ValueError, match=r"recipe \[metric\]: unknown key 'min_cosin'"):
        recipe_from_dict({"model": {}, "metric": {"kind": "embedding", "min_cosin": 0.9}})
    with pytest.raises(ValueError, match="metric.kind"):
        recipe_from_dict({"model": {}, "metric": {"kind": "bleu"}})
