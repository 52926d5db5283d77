"""`edgepack run` end to end on a small recipe, and the pipeline's promises."""

import json
import textwrap

import pytest

from edgepack.cli.main import main
from edgepack.core.files import sha256_file

PROVIDER = textwrap.dedent('''
    """A user's own data provider, imported from the recipe's folder."""
    from edgepack.zoo.mnist1d_models import mnist1d


    def small(samples):
        return mnist1d(samples=samples, seed=7, batch_size=64, calibration_samples=128,
                       transfer_samples=1000)
''')

RECIPE = textwrap.dedent('''
    name = "small"
    seed = 0
    tolerance = 0.5

    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 16 }
    train_epochs = 3

    [data]
    provider = "my_data:small"
    args = { samples = 1500 }

    [[stages]]
    kind = "distill"
    student = { build = "edgepack.zoo:mnist1d_cnn", args = { width = 4 } }
    epochs = 2
    transfer_samples = 1000
    baseline_lrs = [0.01]            # the same student alone, at equal steps, for the report

    [[stages]]
    kind = "prune"
    method = "structured"
    ratio = 0.25
    finetune_epochs = 1
    require_faster = false

    [[stages]]
    kind = "export"
    input_names = ["signal"]         # not the default: every comparison must still line up

    [[stages]]
    kind = "quantize"
    mode = "dynamic"

    [bench]
    threads = 1
    min_runs = 20
    min_time_s = 0.02
''')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe")
    (folder / "my_data.py").write_text(PROVIDER)
    (folder / "recipe.toml").write_text(RECIPE)
    out = folder / "out"
    assert main(["run", str(folder / "recipe.toml"), "--out", str(out), "--no-progress"]) == 0
    return out


def test_run_folder_has_every_file_of_the_design(run_dir):
    for name in ("report.json", "report.md", "tradeoff.png", "recipe.toml", "manifest.json",
                 "01-distill/model.safetensors", "02-prune/model.safetensors",
                 "03-export/model.onnx", "04-quantize/model.onnx"):
        assert (run_dir / name).is_file(), name
    assert not [p for p in run_dir.rglob("*") if p.name.startswith(".")]  # no temp left


def test_report_has_the_keys_tools_rely_on(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    assert {"edgepack_version", "env", "teacher", "stages"} <= set(report)
    assert {"torch", "onnxruntime", "cpu", "providers"} <= set(report["env"])
    assert report["teacher"]["params"] == 3274  # mnist1d_cnn(width=16)
    assert [s["kind"] for s in report["stages"]] == ["distill", "prune", "export", "quantize"]
    for stage in report["stages"]:
        assert {"name", "kind", "artifact", "params", "size_bytes", "accuracy", "latency_ms",
                "provider", "threads", "batch", "kept", "reason"} <= set(stage)
        assert {"p50", "p90", "p99", "mean"} <= set(stage["latency_ms"])
        assert stage["provider"] == "CPUExecutionProvider"
        assert 0.0 <= stage["accuracy"] <= 1.0
        assert stage["kept"] or stage["reason"]
        for attack in ("fgsm", "pgd"):
            assert 0.0 <= stage["robustness"][attack]["0.1"] <= 1.0
    export = report["stages"][2]
    assert export["record"]["parity"]["ok"] is True
    import onnx

    graph = onnx.load(str(run_dir / export["artifact"]), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["signal"]
    assert len({o["batch"] for o in export["record"]["parity"]["outputs"]}) == 2


def test_students_are_smaller_than_the_teacher(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    distill, prune = report["stages"][:2]
    assert distill["params"] * 5 <= report["teacher"]["params"]  # width 16 -> 4
    assert prune["record"]["params_after"] < prune["record"]["params_before"]


def test_manifest_hashes_every_artifact(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())["files"]
    assert "03-export/model.onnx" in manifest and "report.json" in manifest
    for rel, digest in manifest.items():
        assert sha256_file(run_dir / rel) == digest, rel


def test_resume_reuses_finished_stages_and_redoes_an_unfinished_one(run_dir, capsys):
    before = json.loads((run_dir / "report.json").read_text())
    (run_dir / "04-quantize" / "record.json").unlink()  # as if killed during stage 4
    recipe = run_dir.parent / "recipe.toml"
    assert main(["run", str(recipe), "--out", str(run_dir), "--resume", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "[01-distill] done in an earlier run" in err
    assert "[03-export] done in an earlier run" in err
    assert "[04-quantize] running" in err
    after = json.loads((run_dir / "report.json").read_text())
    for old, new in zip(before["stages"][:3], after["stages"][:3]):
        assert old["sha256"] == new["sha256"]
        assert old["accuracy"] == new["accuracy"]


def test_rerun_into_a_used_folder_without_resume_is_refused(run_dir, capsys):
    recipe = run_dir.parent / "recipe.toml"
    assert main(["run", str(recipe), "--out", str(run_dir), "--no-progress"]) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_cuda_requested_without_cuda_is_an_error_not_a_cpu_run(tmp_path, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    folder = tmp_path
    (folder / "my_data.py").write_text(PROVIDER)
    (folder / "r.toml").write_text(RECIPE.replace("threads = 1", 'providers = ["cuda"]\nthreads = 1'))
    code = main(["run", str(folder / "r.toml"), "--out", str(folder / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "CUDAExecutionProvider is not available" in err
    assert not (folder / "out").exists()


def test_every_row_reports_clean_vs_attacked_accuracy_and_attribution_drift(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    assert report["robustness"]["eps"] == [0.05, 0.1]
    assert report["teacher"]["robustness"]["clean"] > 0 and "attribution" not in report["teacher"]
    methods = {}
    for stage in report["stages"]:
        rob = stage["robustness"]
        assert {"clean", "noise", "fgsm", "pgd", "square", "queries"} <= set(rob)
        assert rob["queries"]["0.1"]["max"] <= report["robustness"]["query_budget"]
        assert -1.0 <= stage["attribution"]["rho"] <= 1.0
        methods[stage["kind"]] = stage["attribution"]["method"]
    assert methods == {"distill": "gradient x input", "prune": "gradient x input",
                       "export": "occlusion", "quantize": "occlusion"}
    assert report["stages"][3]["robustness"]["crafted_on"] == "its torch parent"
    markdown = (run_dir / "report.md").read_text()
    assert "## Robustness" in markdown and "| 04-quantize |" in markdown.split("## Robustness")[1]
    assert (run_dir / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_distillation_is_reported_against_the_same_student_alone_at_equal_steps(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    baseline = report["stages"][0]["record"]["alone_baseline"]
    batch = report["stages"][0]["config"]["batch_size"]
    assert baseline["steps"] == 2 * -(-(1200 + 1000) // batch)   # 2 epochs of the KD batches
    assert baseline["alone_lr"] == 0.01 and baseline["kd_lr"] == report["stages"][0]["config"]["lr"]
    assert 0 <= baseline["alone_accuracy"] <= 1 and baseline["binomial_se"] > 0
    markdown = (run_dir / "report.md").read_text()
    assert "## Distillation against a fair baseline" in markdown
    assert f"vs the same student alone {baseline['alone_accuracy']:.4f}" in markdown
