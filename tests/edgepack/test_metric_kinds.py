"""Metric kinds are a registry: a recipe's [metric] keys belong to its kind (another kind's
key is refused naming the chosen kind's keys), and a new kind is one file: the example of
the package's docstring, written as a file of the package, runs a recipe end to end."""

from __future__ import annotations

import json
import textwrap

import pytest

from edgepack.pipeline.metric_kinds import (METRIC_KINDS, kind_of, metric_from_dict,
                                            metric_settings)
from edgepack.pipeline.measure import Artifact
from tests.edgepack.helpers import error_line, run_cli
from tests.registry_examples import ExampleFile, docstring_example

HEADER = ("from dataclasses import dataclass\nfrom typing import ClassVar\n\n"
          "from edgepack.core.stage import option\n"
          "from edgepack.pipeline.metric_kinds import METRIC_KINDS, MetricKind, accuracy")

RECIPE = textwrap.dedent('''
    name = "floor"
    seed = 0

    [metric]
    kind = "accuracy-floor"
    min_accuracy = 0.0

    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 8 }
    train_epochs = 1

    [data]
    provider = "edgepack.zoo:mnist1d"
    args = { samples = 600, calibration_samples = 64 }

    [[stages]]
    kind = "export"

    [[stages]]
    kind = "quantize"
    mode = "dynamic"
    speed_check = false

    [bench]
    threads = 1
    min_runs = 5
    min_time_s = 0.0
''')


@pytest.mark.parametrize("table, message", [
    ({"kind": "accuracy", "max_perplexity_ratio": 1.5},
     "'max_perplexity_ratio' is a setting of metric kind 'language-model', not of 'accuracy'; "
     "'accuracy' takes no settings of its own"),
    ({"kind": "accuracy", "min_cosine": 0.1},
     "'min_cosine' is a setting of metric kind 'embedding', not of 'accuracy'"),
    ({"kind": "embedding", "min_top1_agreement": 0.5},
     "'embedding' takes min_cosine, min_spearman"),
    ({"kind": "language-model", "min_spearman": 0.5},
     "'language-model' takes max_perplexity_ratio, min_top1_agreement"),
    ({"kind": "embeding"}, "unknown metric kind 'embeding' (did you mean 'embedding'?)"),
    ({"kind": "embedding", "min_cosin": 0.9}, "(did you mean 'min_cosine'?)"),
])
def test_a_key_of_another_kind_is_refused_naming_the_kinds_keys(table, message):
    with pytest.raises(ValueError, match="recipe \\[metric\\]") as caught:
        metric_from_dict(table)
    assert message in str(caught.value)


def test_each_kind_holds_its_own_settings_and_round_trips():
    from edgepack.pipeline.metric_kinds import metric_to_dict

    for name in METRIC_KINDS.names():
        settings = metric_settings(name)
        assert kind_of(settings).name == name
        assert metric_from_dict(metric_to_dict(settings)) == settings


def test_the_package_example_is_about_ten_lines():
    import edgepack.pipeline.metric_kinds as package

    code = docstring_example(package)
    assert 6 <= len([line for line in code.splitlines() if line.strip()]) <= 14


def test_a_new_metric_kind_is_one_file(tmp_path, capsys):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    with ExampleFile(tmp_path, "edgepack.pipeline.metric_kinds", METRIC_KINDS,
                     "accuracy_floor", HEADER) as example:
        assert example.added() == {"accuracy-floor"}
        floor = metric_settings("accuracy-floor", min_accuracy=1.0)
        refused = kind_of(floor).judge(type("Run", (), {"metric": floor}), None, None,
                                       Artifact("candidate"), {"accuracy": 0.9})
        assert refused == ["accuracy 0.9000 < 1.0"]
        code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "out", "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["metric"] == {"kind": "accuracy-floor", "min_accuracy": 0.0}
    assert [s["kept"] for s in report["stages"]] == [True, True]
    assert "accuracy" in (tmp_path / "out" / "report.md").read_text()
    assert "accuracy-floor" not in METRIC_KINDS.names()     # gone with its file
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "again")
    assert code == 2 and "unknown metric kind 'accuracy-floor'" in error_line(err)
