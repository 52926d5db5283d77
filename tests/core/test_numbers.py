"""Settings that are not numbers: NaN, infinities and out-of-range values are refused by
name when a config is made, from a recipe table or the API, before anything runs.

NaN compares false with everything: a NaN threshold silently passes (or fails) every check
it guards, and an infinite budget never ends. One helper (:mod:`edgepack.core.checks`) refuses both,
and every float field of every stage config goes through it.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from edgepack.core.checks import (BUDGETS, check_budget, check_finite_fields, check_number,
                                  checked_fields, is_float_annotation)
from edgepack.core.stage import registered_kinds, stage_spec
from edgepack.pipeline.stage_modules import load_stages

NOT_NUMBERS = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value, low, high, says", [
    (math.nan, 0.0, None, "package.atol=nan is not a finite number; expected a number >= 0"),
    (math.inf, 0.0, None, "package.atol=inf is not a finite number"),
    (-1.0, 0.0, None, "package.atol=-1.0 is out of range; expected a number >= 0"),
    (1.5, 0.0, 1.0, "package.atol=1.5 is out of range; expected a number in \\[0.0, 1.0\\]"),
    ("0.1", 0.0, None, "package.atol='0.1' is not a finite number"),
    (True, 0.0, None, "package.atol=True is not a finite number"),
])
def test_check_number_names_the_field_and_what_was_expected(value, low, high, says):
    with pytest.raises(ValueError, match=says):
        check_number("package", "atol", value, low, high)


def test_check_number_takes_finite_numbers_and_huge_integers():
    check_number("bench", "min_time_s", 0, 0.0)
    check_number("bench", "min_time_s", 2.5, 0.0, 10.0)
    with pytest.raises(ValueError, match="out of range"):
        check_number("x", "n", 10 ** 400, 0, 10)   # no OverflowError on a huge int


def test_a_flag_is_named_as_given():
    with pytest.raises(ValueError, match="^--rtol=inf is not a finite number"):
        check_number("", "--rtol", math.inf, 0.0)
    with pytest.raises(ValueError, match="^--rounds=1,000,000,000 is beyond the bound of 1,000"):
        check_budget("", "--rounds", 10 ** 9, "rounds")


@pytest.mark.parametrize("unit", sorted(BUDGETS))
def test_every_budget_has_a_bound(unit):
    check_budget("t", "n", BUDGETS[unit], unit)
    with pytest.raises(ValueError, match=f"bound of {BUDGETS[unit]:,} {unit}"):
        check_budget("t", "n", BUDGETS[unit] + 1, unit)


def _float_fields(cls) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if is_float_annotation(hints[f.name])]


def _stage_float_fields() -> list[tuple[str, str]]:
    load_stages()
    return [(kind, name) for kind in registered_kinds()
            for name in _float_fields(stage_spec(kind).config)]


STAGE_FLOATS = _stage_float_fields()


def test_the_sweep_covers_the_stages_with_float_settings():
    kinds = {kind for kind, _ in STAGE_FLOATS}
    assert {"distill", "prune", "export", "quantize", "package", "optimize"} <= kinds


@pytest.mark.parametrize("kind, name", STAGE_FLOATS)
@pytest.mark.parametrize("value", NOT_NUMBERS, ids=str)
def test_no_stage_float_setting_takes_nan_or_infinity_from_a_recipe(kind, name, value):
    cls = stage_spec(kind).config
    data = {name: [value] if typing.get_origin(typing.get_type_hints(cls)[name]) in
            (list, tuple) else value}
    with pytest.raises(ValueError, match=f"{name}=.*(nan|inf).* is not a finite number"):
        cls.from_dict(data, where=f"recipe stages[0] ({kind})")


def _api_configs():
    """Configs made from the API (not through a recipe table), and what they need."""
    from edgepack.bench.robustness.attack_config import RobustnessConfig
    from edgepack.bench.runner import BenchConfig
    from edgepack.compress.adversarial import AdversarialConfig
    from edgepack.compress.distill import DistillConfig
    from edgepack.compress.private import DPConfig
    from edgepack.compress.prune import PruneConfig
    from edgepack.compress.quantize.quantize_config import QuantizeConfig
    from edgepack.compress.trainer import TrainConfig
    from edgepack.pipeline.architecture_sweep import SweepSettings
    from edgepack.pipeline.metric_kinds.embedding import EmbeddingMetric
    from edgepack.pipeline.metric_kinds.language_model import LanguageModelMetric
    from edgepack.pipeline.recipe import ModelSpec
    from edgepack.export.fuse_transformer import FuseConfig
    from edgepack.export.optimize import OptimizeConfig
    from edgepack.export.package import PackageConfig

    return [RobustnessConfig, BenchConfig, AdversarialConfig, DistillConfig, DPConfig,
            PruneConfig, QuantizeConfig, TrainConfig, EmbeddingMetric, LanguageModelMetric,
            ModelSpec, FuseConfig,
            OptimizeConfig, PackageConfig, SweepSettings]


API_FLOATS = [(cls, name) for cls in _api_configs() for name in _float_fields(cls)]


@pytest.mark.parametrize("cls, name", API_FLOATS,
                         ids=[f"{c.__name__}.{n}" for c, n in API_FLOATS])
@pytest.mark.parametrize("value", NOT_NUMBERS, ids=str)
def test_no_config_float_field_takes_nan_or_infinity(cls, name, value):
    hints = typing.get_type_hints(cls)
    given = (value,) if typing.get_origin(hints[name]) in (list, tuple) else value
    with pytest.raises(ValueError, match=f"{name}=.*is not a finite number"):
        cls(**{name: given})


def test_checked_fields_refuses_nan_in_a_recipe_table():
    from edgepack.pipeline.metric_kinds.language_model import LanguageModelMetric

    with pytest.raises(ValueError, match="recipe \\[metric\\] max_perplexity_ratio=nan is not "
                                         "a finite number"):
        checked_fields(LanguageModelMetric, {"max_perplexity_ratio": math.nan}, "recipe [metric]")


def test_check_finite_fields_passes_finite_and_unset_values():
    from edgepack.compress.quantize.quantize_config import QuantizeConfig

    check_finite_fields(QuantizeConfig(min_centred_cosine=None), "quantize")
