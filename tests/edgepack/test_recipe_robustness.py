"""The recipe's [robustness] table, the defence fields on stages, and the old [bench] keys."""

import pytest

from edgepack.bench.robustness import RobustnessConfig
from edgepack.pipeline.recipe import recipe_from_dict, to_toml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

BASE = {"model": {"build": "edgepack.zoo:mnist1d_cnn"}}


def test_the_table_round_trips_through_the_resolved_recipe():
    recipe = recipe_from_dict({**BASE, "robustness": {
        "eps": [0.05, 0.2], "samples": 128, "attacks": ["noise", "square"],
        "query_budget": 50, "attribution_threshold": 0.3},
        "stages": [{"kind": "prune", "adversarial": {"eps": 0.1, "steps": 3, "ratio": 0.5}}]})
    assert recipe.robustness == RobustnessConfig(eps=(0.05, 0.2), samples=128,
                                                 attacks=("noise", "square"), query_budget=50,
                                                 attribution_threshold=0.3)
    again = recipe_from_dict(tomllib.loads(to_toml(recipe)))
    assert again.robustness == recipe.robustness
    assert again.stages[0].adversarial == {"eps": 0.1, "steps": 3, "ratio": 0.5}


@pytest.mark.parametrize("table, message", [
    ({"robustness": {"epsilon": [0.1]}}, "unknown key 'epsilon' (did you mean 'eps'?)"),
    ({"robustness": {"attacks": ["pgd", "squar"]}}, "did you mean 'square'?"),
    ({"robustness": {"eps": 0.1}}, "robustness].eps must be a list"),
    ({"robustness": {"query_budget": 0}}, "query_budget must be >= 1"),
    ({"bench": {"robustness_eps": [0.1]}},
     "[bench].robustness_eps has moved to the [robustness] table"),
    ({"bench": {"robustness_samples": 64}}, "samples = N (was robustness_samples)"),
    ({"stages": [{"kind": "distill", "adversarial": {"eps": 0.1, "step": 3}}]},
     "unknown key 'step' (did you mean 'steps'?)"),
])
def test_bad_tables_are_one_clear_error(table, message):
    with pytest.raises(ValueError) as info:
        recipe_from_dict({**BASE, **table})
    assert message in str(info.value)
