"""A new attack is one new file: the example in edgepack.bench.robustness.attacks' docstring, written
as a file of that package, is measured, tabled and named like the built-in ones."""

from __future__ import annotations

import edgepack.bench.robustness.attacks as attacks_package
from edgepack.bench.robustness import RobustnessConfig, evaluate_robustness, robustness_session
from edgepack.bench.robustness.attacks import ATTACKS
from edgepack.bench.robustness.robustness_report import robustness_table
from tests.bench.robust_models import eval_arrays, export_tiny, trained_tiny
from tests.registry_examples import ExampleFile, docstring_example

HEADER = ("import numpy as np\n\n"
          "from edgepack.bench.robustness.attacks import ATTACKS, AttackSpec, accuracy")


def test_the_example_is_about_ten_lines():
    code = docstring_example(attacks_package)
    assert 5 <= len([line for line in code.splitlines() if line.strip()]) <= 14


def test_a_new_attack_is_one_file(tmp_path):
    model = export_tiny(trained_tiny(), tmp_path / "m.onnx")
    x, y = eval_arrays(32)
    with ExampleFile(tmp_path, "edgepack.bench.robustness.attacks", ATTACKS, "uniform", HEADER) as ex:
        assert ex.added() == {"uniform"}
        assert ATTACKS.names().index("uniform") == 1   # order 15: after noise, before FGSM
        config = RobustnessConfig(eps=(0.1,), samples=32, attacks=("noise", "uniform"))
        result = evaluate_robustness(robustness_session(model), x, y, config)
        table = robustness_table([{"name": "m", "robustness": result}])
    assert 0.0 <= result["uniform"]["0.1"] <= 1.0
    assert "uniform noise eps=0.1" in table
    assert "uniform" not in ATTACKS.names()


def test_every_built_in_attack_is_registered_in_report_order():
    assert ATTACKS.names() == ("noise", "fgsm", "pgd", "square")
    assert [ATTACKS.get(n).needs_source for n in ATTACKS.names()] == [False, True, True, False]
