"""A language-model recipe end to end on a tiny decoder: export with the KV cache, the
quantize search, the report, the deployment files, --resume, and the refusals."""

import json
import textwrap

import pytest

from edgepack.pipeline.metric_kinds import metric_settings
from edgepack.pipeline.recipe_runner import run_recipe
from tests.edgepack.helpers import error_line, run_cli

pytest.importorskip("optimum.exporters.onnx")

RECIPE = """\
name = "tiny-decoder"

[metric]
kind = "language-model"
max_perplexity_ratio = {ratio}
min_top1_agreement = 0.5
prompt_tokens = 32
new_tokens = 6
rounds = 1

[model]
build = "tests.tiny_decoder:tiny_decoder_model"
args = {{ folder = "{folder}" }}

[data]
provider = "tests.tiny_decoder:tiny_decoder_text"
args = {{ folder = "{folder}" }}

[[stages]]
kind = "export-decoder"

[[stages]]
kind = "quantize-decoder"
algorithms = ["rtn"]
block_sizes = [32]
symmetric = [true, false]
accuracy_levels = [4]
int8_dynamic = false
"""


def _recipe(tmp_path, folder, ratio=1.5, extra=""):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE.format(folder=folder, ratio=ratio) + textwrap.dedent(extra))
    return path


@pytest.fixture(scope="module")
def tiny_run(tiny_decoder, tmp_path_factory):
    hf_folder, _ = tiny_decoder
    root = tmp_path_factory.mktemp("decoder-run")
    recipe = _recipe(root, hf_folder)
    report = run_recipe(recipe, root / "out", progress=False)
    return root / "out", report, recipe


def test_report_has_language_model_rows(tiny_run):
    out, report, _ = tiny_run
    saved = json.loads((out / "report.json").read_text())
    assert saved["metric"]["kind"] == "language-model"
    export, quantize = saved["stages"]
    assert export["kind"] == "export-decoder" and export["kept"]
    assert export["perplexity_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert export["top1_agreement"] == 1.0 and export["greedy_agreement"] == 1.0
    assert export["decode_tokens_per_s"] > 0 and export["prefill_ms"]["p50"] > 0
    assert saved["teacher"]["perplexity"] == pytest.approx(export["perplexity"], rel=1e-3)
    # Two candidates tried and recorded, whatever the verdict on this machine's timings.
    assert len(quantize["record"]["candidates"]) == 2
    assert (out / "report.md").read_text().startswith("# edgepack report: tiny-decoder")
    assert (out / "tradeoff.png").stat().st_size > 0
    assert "manifest.json" in {p.name for p in out.iterdir()}


def test_final_artifact_is_deployable(tiny_run):
    out, report, _ = tiny_run
    final = out / report["final_artifact"]
    assert final.name == "model.onnx"
    beside = {p.name for p in final.parent.iterdir()}
    assert {"genai_config.json", "tokenizer.json", "tokenizer_config.json"} <= beside
    kept = [s for s in report["stages"] if s.get("kept")]
    assert report["final_artifact"] == kept[-1]["artifact"]


def test_resume_reuses_finished_stages(tiny_run, caplog):
    out, report, recipe = tiny_run
    import logging

    with caplog.at_level(logging.INFO, logger="edgepack"):
        again = run_recipe(recipe, out, resume=True, progress=False)
    assert "[01-export-decoder] done in an earlier run" in caplog.text
    assert again["stages"][0]["sha256"] == report["stages"][0]["sha256"]


def test_a_strict_gate_refuses_quantize_and_names_the_best(tiny_decoder, tmp_path,
                                                           monkeypatch):
    from tests.decoder_timing import fake_search_timing

    fake_search_timing(monkeypatch)   # the verdict is the gate's, whatever the probe timed
    hf_folder, _ = tiny_decoder
    recipe = _recipe(tmp_path, hf_folder, ratio=1.001)
    (tmp_path / "recipe.toml").write_text(recipe.read_text().replace(
        "min_top1_agreement = 0.5", "min_top1_agreement = 1.0"))
    report = run_recipe(recipe, tmp_path / "out", progress=False)
    quantize = report["stages"][1]
    assert not quantize["kept"] and "the best was int4" in quantize["reason"]
    assert report["final_artifact"] == report["stages"][0]["artifact"]


def test_a_quantize_stage_without_an_onnx_decoder_is_skipped(tiny_decoder, tmp_path):
    hf_folder, _ = tiny_decoder
    recipe = _recipe(tmp_path, hf_folder)
    (tmp_path / "recipe.toml").write_text(recipe.read_text().replace(
        "min_top1_agreement = 0.5", "min_greedy_agreement = 1.0\nmin_top1_agreement = 1.0")
        .replace("[[stages]]\nkind = \"export-decoder\"",
                 "[[stages]]\nkind = \"export-decoder\"\nparity_multiple = 1e-9"))
    report = run_recipe(recipe, tmp_path / "out", progress=False)
    export, quantize = report["stages"]
    assert not export["kept"] and export["reason"].startswith("ONNX outputs differ")
    # every failing figure, not the first line: each logits step and the cache
    assert len(export["reasons"]) > 5 and all("\u2717" in r for r in export["reasons"][1:])
    assert quantize["reason"].startswith("skipped: no ONNX decoder")
    assert report["final_artifact"] is None
    outcome = report["outcome"]
    assert outcome["deployable"] is False and outcome["reasons"][0].startswith("01-export")
    assert "No deployable model" in (tmp_path / "out" / "report.md").read_text()


def test_a_run_that_keeps_nothing_deployable_exits_1(tiny_decoder, tmp_path, capsys):
    hf_folder, _ = tiny_decoder
    recipe = _recipe(tmp_path, hf_folder)
    (tmp_path / "recipe.toml").write_text(recipe.read_text().replace(
        "[[stages]]\nkind = \"export-decoder\"",
        "[[stages]]\nkind = \"export-decoder\"\nparity_multiple = 1e-9"))
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "out", "--no-progress")
    assert code == 1
    assert "the run kept no deployable model" in err and "01-export-decoder" in err
    assert "\u2717 logits (prefill, 12 tokens)" in err


def test_a_classifier_stage_is_refused_before_anything_runs(tiny_decoder, tmp_path, capsys):
    hf_folder, _ = tiny_decoder
    recipe = _recipe(tmp_path, hf_folder, extra="""
        [[stages]]
        kind = "package"
        """)
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "out")
    assert code == 2 and "kind 'package' does not work on a decoder LLM" in error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("table, message", [
    ({"max_perplexity_ratio": 0.9}, "max_perplexity_ratio must be >= 1.0"),
    ({"min_top1_agreement": 1.5}, "min_top1_agreement"),
    ({"prompt_tokens": 0}, "prompt_tokens must be an integer"),
])
def test_bad_language_model_thresholds(table, message):
    with pytest.raises(ValueError, match=message):
        metric_settings("language-model", **table)


def test_decoder_stages_need_the_language_model_metric(tiny_decoder, tmp_path, capsys):
    hf_folder, _ = tiny_decoder
    recipe = _recipe(tmp_path, hf_folder)
    text = recipe.read_text()
    metric = text[text.index("[metric]"):text.index("[model]")]
    recipe.write_text(text.replace(metric, '[metric]\nkind = "accuracy"\n\n'))
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "out")
    assert code == 2 and 'set [metric] kind = "language-model"' in error_line(err)
    assert not (tmp_path / "out").exists()


def test_the_plot_holds_every_judged_candidate():
    from edgepack.pipeline.decoder_report import candidate_points

    record = {"input": {"decode_tokens_per_s": 10.0}, "candidates": [
        {"label": "a", "perplexity": 5.0, "decode_tokens_per_s": 30.0, "verdict": "chosen"},
        {"label": "b", "perplexity": 9.0, "probe_speedup": 2.5,
         "verdict": "failed the quality gate"},
        {"label": "c", "probe_speedup": 0.2, "verdict": "slower than the input on a first probe"}]}
    points = candidate_points([{"record": record}])
    assert [(p["label"], p["tokens_per_s"], p["timed"], p["passed"]) for p in points] == [
        ("a", 30.0, True, True), ("b", 25.0, False, False)]
