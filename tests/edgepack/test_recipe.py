"""Recipes: parsing, checks with clear messages, and the TOML round-trip."""

from pathlib import Path

import pytest

from edgepack.compress.distill import DistillConfig
from edgepack.compress.prune import PruneConfig
from edgepack.compress.quantize import QuantizeConfig
from edgepack.pipeline.recipe import load_recipe, recipe_from_dict, to_toml, tomllib
from edgepack.export.torch_export import ExportConfig

ROOT = Path(__file__).resolve().parents[2]
BASE = {"name": "t", "model": {"build": "edgepack.zoo:mnist1d_cnn", "args": {"width": 8}}}


def test_examples_recipe_is_exactly_the_demo_recipe():
    packaged = ROOT / "edgepack" / "recipes" / "mnist1d.toml"
    assert (ROOT / "examples" / "mnist1d.toml").read_text() == packaged.read_text()


def test_demo_recipe_loads_with_all_four_stage_kinds():
    recipe = load_recipe(ROOT / "examples" / "mnist1d.toml")
    assert [type(s) for s in recipe.stages] == [DistillConfig, PruneConfig, ExportConfig,
                                                QuantizeConfig]
    assert recipe.model.args == {"width": 96}
    assert recipe.stages[0].student["args"] == {"width": 64}
    assert recipe.bench.threads == 1


def test_resolved_recipe_round_trips_through_toml(tmp_path):
    recipe = load_recipe(ROOT / "examples" / "mnist1d.toml")
    again = recipe_from_dict(tomllib.loads(to_toml(recipe)))
    assert again.to_dict() == recipe.to_dict()


@pytest.mark.parametrize("patch, message", [
    ({"stages": [{"kind": "distil"}]}, "unknown stage kind 'distil' (did you mean 'distill'?)"),
    ({"stages": [{"kind": "prune", "ratoi": 0.5}]}, "unknown key 'ratoi' (did you mean 'ratio'?)"),
    ({"stages": [{"kind": "prune", "ratio": "half"}]}, "prune).ratio must be a number, got 'half'"),
    ({"stages": [{"kind": "prune", "ratio": 1.0}]}, "prune.ratio=1.0 is outside [0.0, 1.0)"),
    ({"stages": [{"kind": "prune", "ratio": -0.1}]}, "prune.ratio=-0.1 is outside [0.0, 1.0)"),
    ({"stages": [{"kind": "prune", "method": "random"}]}, "prune.method='random' is not valid"),
    ({"stages": [{"kind": "quantize"}]}, "put an export or export-decoder stage before it"),
    ({"stages": [{"kind": "export"}, {"kind": "prune"}]}, "must come before the export stage"),
    ({"tolerence": 0.1}, "unknown key 'tolerence' (did you mean 'tolerance'?)"),
    ({"tolerance": "1%"}, "tolerance must be a number >= 0"),
    ({"train_threads": -1}, "train_threads must be an integer >= 0"),
    ({"train_threads": 1.5}, "train_threads must be an integer >= 0"),
    ({"bench": {"thread": 2}}, "unknown key 'thread' (did you mean 'threads'?)"),
    ({"bench": {"graph_optimization": "max"}}, "graph_optimization='max' is not valid"),
    ({"bench": {"spin_wait": "no"}}, "spin_wait must be a boolean"),
    ({"model": {"build": "m:f", "epochs": 3}}, "[model]: unknown key 'epochs'"),
    ({"model": {"build": "m:f", "augment": "flip"}}, "[model].augment='flip' is not valid"),
    ({"stages": [{"kind": "quantize", "mode": "int3"}]}, "quantize.mode='int3' is not valid"),
])
def test_bad_recipes_are_refused_with_one_clear_message(patch, message):
    with pytest.raises(ValueError) as info:
        recipe_from_dict({**BASE, **patch})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_recipe_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml does not exist"):
        load_recipe(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(ValueError, match="bad.toml is not valid TOML"):
        load_recipe(path)


def test_train_threads_apply_while_the_recipe_trains_and_are_restored_after(monkeypatch, tmp_path):
    import torch

    from edgepack.pipeline import recipe_runner as runner

    seen = {}

    def fake_pipeline(*args, **kwargs):
        seen["threads"] = torch.get_num_threads()
        return {}

    def fake_teacher(*args, **kwargs):
        seen["teacher_threads"] = torch.get_num_threads()
        return torch.nn.Linear(1, 1), None   # the model and its DP record (none)

    monkeypatch.setattr(runner, "run_pipeline", fake_pipeline)
    monkeypatch.setattr(runner, "prepare_teacher_with_record", fake_teacher)
    monkeypatch.setattr(runner, "load_data", lambda recipe: {})
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    recipe = recipe_from_dict({**BASE, "train_threads": wanted, "stages": [{"kind": "export"}]})
    assert recipe.train_threads == wanted
    assert "train_threads = " in to_toml(recipe)
    runner.run_recipe(recipe, tmp_path / "out")
    assert seen == {"threads": wanted, "teacher_threads": wanted}
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")),
                         ids=lambda path: path.name)
def test_every_example_recipe_loads(example):
    recipe = load_recipe(example)
    assert recipe.name and recipe.stages
