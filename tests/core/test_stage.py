"""The stage contract: configs validate themselves and round-trip through dicts."""

import pytest
from hypothesis import given, strategies as st

from edgepack.compress.distill import DistillConfig
from edgepack.compress.prune import PruneConfig
from edgepack.compress.quantize import QuantizeConfig, quantize_config
from edgepack.core.checks import did_you_mean
from edgepack.export.torch_export import ExportConfig


@given(ratio=st.floats(0.0, 0.999), method=st.sampled_from(["structured", "unstructured"]),
       steps=st.integers(1, 5), round_to=st.integers(0, 16),
       ignored=st.lists(st.text("abc.0", min_size=1, max_size=5), max_size=3))
def test_prune_config_round_trips(ratio, method, steps, round_to, ignored):
    cfg = PruneConfig(method=method, ratio=ratio, iterative_steps=steps, round_to=round_to,
                      ignored_layers=tuple(ignored))
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg


@given(mode=st.sampled_from(["dynamic", "static", "fp16", "int4"]),
       calibration=st.sampled_from(["minmax", "entropy", "percentile"]),
       per_channel=st.booleans(), samples=st.integers(1, 10_000))
def test_quantize_config_round_trips(mode, calibration, per_channel, samples):
    flat = {"calibration_samples": samples}
    if mode in ("dynamic", "static"):
        flat["per_channel"] = per_channel
    if mode == "static":
        flat["calibration"] = calibration
    cfg = quantize_config(mode, **flat)
    assert QuantizeConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("cls", [DistillConfig, PruneConfig, ExportConfig, QuantizeConfig])
def test_defaults_round_trip_and_carry_their_kind(cls):
    cfg = cls()
    data = cfg.to_dict()
    assert data["kind"] == cls.kind
    assert cls.from_dict(data) == cfg


def test_did_you_mean_finds_the_close_choice_only():
    assert did_you_mean("strctured", ["structured", "unstructured"]) == " (did you mean 'structured'?)"
    assert did_you_mean("zzz", ["structured"]) == ""
