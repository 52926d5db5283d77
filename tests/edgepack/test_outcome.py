"""A run that keeps no deployable model is a failure: exit 1, every reason in the report."""

import json
import textwrap

import pytest

from edgepack.core.stage import stage_spec
from edgepack.pipeline.outcome import NothingDeployable, check_outcome, run_outcome
from edgepack.pipeline.stage_modules import load_stages
from tests.edgepack.helpers import run_cli

RECIPE = textwrap.dedent('''
    name = "nothing-kept"
    seed = 0

    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 8 }
    train_epochs = 1

    [data]
    provider = "edgepack.zoo:mnist1d"
    args = { samples = 600, calibration_samples = 64 }

    [[stages]]
    kind = "export"

    [bench]
    threads = 1
    min_runs = 5
    min_time_s = 0.0
''')


def _configs(*kinds):
    load_stages()
    return [stage_spec(kind).config() for kind in kinds]


@pytest.mark.parametrize("kinds, final, teacher, deployable", [
    (("export",), "03-export/model.onnx", "00-teacher/model.safetensors", True),
    (("export",), "00-teacher/model.safetensors", "00-teacher/model.safetensors", False),
    (("distill", "export"), "01-distill/model.safetensors", "00-teacher/model.safetensors",
     False),                                           # the recipe makes ONNX: torch is not it
    (("distill",), "01-distill/model.safetensors", "00-teacher/model.safetensors", True),
    (("distill",), "00-teacher/model.safetensors", "00-teacher/model.safetensors", False),
    (("export-decoder",), None, None, False),
])
def test_what_counts_as_deployable(kinds, final, teacher, deployable):
    entries = [{"name": f"0{i}-{k}", "kept": deployable, "reason": "why",
                "reasons": ["why", "\u2717 figure"]} for i, k in enumerate(kinds, 1)]
    outcome = run_outcome(_configs(*kinds), entries, final, teacher)
    assert outcome["deployable"] is deployable
    if not deployable:
        assert outcome["reasons"]
        with pytest.raises(NothingDeployable) as caught:
            check_outcome({"outcome": outcome})
        assert caught.value.exit_code == 1


def _failing_export(config, given):
    """The export stage refused by its parity check, as on a CPU whose kernels differ."""
    from edgepack.export.parity import ParityError

    raise ParityError("ONNX outputs differ from torch beyond the derived tolerance:\n"
                      "  \u2717 logits (batch 1): error 3.0e-02 of scale 1 (torch fp32 1.0e-06; "
                      "allowed 1.6e-05; max abs 3.0e-02)\n"
                      "  \u2717 logits (batch 8): error 2.0e-02 of scale 1 (torch fp32 1.0e-06; "
                      "allowed 1.6e-05; max abs 2.0e-02)")


def test_a_failed_export_is_exit_1_with_every_figure(tmp_path, capsys, monkeypatch):
    import dataclasses

    from edgepack.core import stage

    load_stages()
    monkeypatch.setitem(stage._REGISTRY, "export", dataclasses.replace(
        stage_spec("export"), run=_failing_export))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "out", "--no-progress")
    assert code == 1
    assert "the run kept no deployable model (an ONNX model)" in err
    assert err.count("\u2717 logits") == 2            # batch 1 and batch 8, both named
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    export = report["stages"][0]
    assert not export["kept"] and len(export["reasons"]) == 3
    assert report["outcome"]["deployable"] is False
    assert "No deployable model" in (tmp_path / "out" / "report.md").read_text()
