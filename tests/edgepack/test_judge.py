"""The keep/refuse rule of the pipeline, on fixed numbers (timing is not a test's job)."""

import pytest

from edgepack.compress.distill import DistillConfig
from edgepack.compress.prune import PruneConfig
from edgepack.compress.quantize import quantize_config, quantize
from edgepack.pipeline.measure import Artifact, PipelineContext, with_input
from edgepack.pipeline.metric_kinds import kind_of
from edgepack.bench.runner import BenchConfig
from tests.bench.conftest import matmul_add


def judge(ctx, config, source, metrics, reference_latency, candidate):
    """The accuracy kind's verdict on fixed figures: (kept, the reasons in one line)."""
    figures = with_input(dict(metrics), {"latency_ms": reference_latency}, source)
    reasons = kind_of(ctx.metric).judge(ctx, config, source, Artifact("candidate",
                                        onnx_path=candidate), figures)
    return not reasons, "; ".join(reasons)


def _ctx(tmp_path, tolerance=0.01):
    return PipelineContext(out_dir=tmp_path, data={}, example_inputs=None, eval_arrays={},
                           tolerance=tolerance, bench=BenchConfig(), teacher=None,
                           scratch=tmp_path)


def _metrics(accuracy, p50):
    return {"accuracy": accuracy, "latency_ms": {"p50": p50}}


SOURCE = Artifact("input", metrics=_metrics(0.95, 1.0))


@pytest.mark.parametrize("config, accuracy, p50, kept, reason", [
    (PruneConfig(), 0.945, 0.5, True, ""),
    (PruneConfig(), 0.93, 0.5, False, "accuracy drop 0.0200 > tolerance 0.0100"),
    (PruneConfig(), 0.95, 1.0, False, "not faster (p50 1.0000 ms vs 1.0000 ms"),
    (PruneConfig(method="unstructured"), 0.95, 1.2, True, ""),    # size, not speed
    (quantize_config(mode="dynamic", allow_slower=True), 0.95, 1.0, True, ""),  # as it says
    (PruneConfig(tolerance=0.05), 0.93, 0.5, True, ""),           # the stage's own tolerance
    (DistillConfig(), 0.949, 3.0, True, ""),                      # no speed promise
])
def test_keep_only_what_is_accurate_enough_and_where_promised_faster(
        tmp_path, config, accuracy, p50, kept, reason):
    ok, why = judge(_ctx(tmp_path), config, SOURCE, _metrics(accuracy, p50), {"p50": 1.0},
                    tmp_path / "unused.onnx")
    assert ok is kept
    assert reason in why and (why == "") == kept


def test_a_slower_quantized_model_is_refused_with_its_cause(tmp_path):
    fp32 = matmul_add(tmp_path / "m.onnx")
    int8 = quantize(fp32, quantize_config(mode="dynamic", speed_check=False, latency_aware=False),
                    tmp_path / "q.onnx").artifact
    ok, why = judge(_ctx(tmp_path), quantize_config(mode="dynamic"), SOURCE, _metrics(0.95, 1.5),
                    {"p50": 1.0}, int8)
    assert not ok
    assert why.startswith("not faster (p50 1.5000 ms vs 1.0000 ms for its input; likely cause:")
