"""Stages join pipelines through the registry: optimize and package as recipe stages, and a
user's own stage from the recipe's folder, with no edit anywhere else."""

import json
import re
import textwrap
from dataclasses import dataclass
from typing import ClassVar

import pytest

from edgepack.core.stage import StageConfig, StageSpec, register_stage, stage_spec
from edgepack.cli.main import main
from edgepack.pipeline.recipe import recipe_from_dict

CUSTOM_STAGE = textwrap.dedent('''
    """A user's stage: copy the ONNX model and count its nodes."""
    import shutil
    from dataclasses import dataclass

    import onnx

    from edgepack.core.stage import StageConfig, StageResult, StageSpec, option, register_stage


    @dataclass
    class CountConfig(StageConfig):
        kind = "count-nodes"
        note: str = option("", "a note kept in the record")


    def run_count(config, given):
        target = given.folder / "model.onnx"
        shutil.copyfile(given.artifact, target)
        nodes = len(onnx.load(str(target)).graph.node)
        return StageResult(target, {"nodes": nodes, "note": config.note})


    register_stage(StageSpec("count-nodes", CountConfig, consumes="onnx", produces="onnx",
                             run=run_count))
''')

RECIPE = textwrap.dedent('''
    name = "registry"
    tolerance = 0.5
    stage_modules = ["my_stage"]

    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 8 }
    train_epochs = 1

    [data]
    args = { samples = 600, transfer_samples = 0, calibration_samples = 64 }

    [[stages]]
    kind = "export"

    [[stages]]
    kind = "optimize"
    level = "basic"

    [[stages]]
    kind = "count-nodes"
    note = "hello"

    [[stages]]
    kind = "package"

    [bench]
    min_runs = 10
    min_time_s = 0.01

    [robustness]
    samples = 0
''')


def test_optimize_package_and_a_users_stage_run_from_a_recipe(tmp_path):
    (tmp_path / "my_stage.py").write_text(CUSTOM_STAGE)
    (tmp_path / "recipe.toml").write_text(RECIPE)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "recipe.toml"), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    kinds = {s["kind"]: s for s in report["stages"]}
    assert list(kinds) == ["export", "optimize", "count-nodes", "package"]
    assert all(s["kept"] for s in report["stages"]), [s.get("reason") for s in report["stages"]]
    assert kinds["optimize"]["record"]["parity"]["ok"]
    assert kinds["count-nodes"]["record"] == {"nodes": kinds["count-nodes"]["record"]["nodes"],
                                              "note": "hello"}
    assert kinds["count-nodes"]["record"]["nodes"] > 0
    assert (out / "04-package" / "model.ort").is_file()
    assert kinds["package"]["record"]["parity"]["ok"]
    assert report["final_artifact"] == "03-count-nodes/model.onnx"
    assert all(s["config_version"] == 1 for s in report["stages"])


@pytest.mark.parametrize("stages, message", [
    ([{"kind": "optimize"}], "optimize works on an ONNX model; put an export or export-decoder stage before it"),
    ([{"kind": "export"}, {"kind": "optimize"}, {"kind": "prune"}],
     "prune works on the torch model and must come before the export stage"),
    ([{"kind": "package"}], "package works on an ONNX model"),
    ([{"kind": "export"}, {"kind": "export"}], "a second export stage"),
    ([{"kind": "optimise"}], "unknown stage kind 'optimise' (did you mean 'optimize'?)"),
])
def test_stage_order_follows_what_each_stage_consumes(stages, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        recipe_from_dict({"model": {}, "stages": stages})


@dataclass
class _TorchConfig(StageConfig):
    kind: ClassVar[str] = "test-torch-stage"


def test_a_torch_stage_must_say_how_it_is_rebuilt_on_resume():
    with pytest.raises(ValueError, match="needs rebuild"):
        StageSpec("test-torch-stage", _TorchConfig, consumes="torch", produces="torch",
                  run=lambda config, given: None)


def test_a_kind_cannot_be_taken_by_another_config():
    @dataclass
    class Impostor(StageConfig):
        kind: ClassVar[str] = "prune"

    stage_spec("prune")  # the built-in stages are loaded by the recipe module
    with pytest.raises(ValueError, match="already registered"):
        register_stage(StageSpec("prune", Impostor, consumes="torch", produces="onnx",
                                 run=lambda config, given: None))
