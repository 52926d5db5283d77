"""bench(): the result contract, any valid model, accuracy, memory, interleaving."""

import numpy as np
import pytest

from edgepack.bench.output_quality import reference_errors
from edgepack.bench.runner import RESULT_KEYS, BenchConfig, bench, time_interleaved
from tests.bench.conftest import (QUICK, external_data_model, matmul_add, reference_outputs,
                                  token_model)


def test_result_holds_the_keys_the_pipeline_reads(models):
    result, = bench(models["matmul"], BenchConfig(**QUICK))
    assert set(RESULT_KEYS) - {"accuracy"} <= set(result)
    assert result["provider"] == "CPUExecutionProvider"
    assert result["providers"] == ["CPUExecutionProvider"]
    assert result["latency_ms"]["runs"] >= 5
    lat = result["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result["session_create_ms"] > 0 and result["first_inference_ms"] > 0
    assert result["params"] == 16 * 10 + 10
    assert result["nodes_per_provider"] == {"CPUExecutionProvider": 1}
    assert "accuracy" not in result and "throughput_per_s" not in result


def test_several_models_are_timed_to_the_same_budget(models):
    paths = [models["matmul"], models["tokens"], models["opset9"]]
    results = bench(paths, BenchConfig(**QUICK, block_runs=3))
    assert [r["model"] for r in results] == [str(p) for p in paths]
    assert len({r["latency_ms"]["runs"] for r in results}) == 1  # interleaved to the end


def test_interleaving_alternates_the_order():
    order = []

    class FakeTimer:
        def __init__(self, name):
            self.name, self.samples_ns, self.max_runs = name, [], 100

        def time_block(self, runs):
            order.append(self.name)
            self.samples_ns += [1] * runs

        def done(self):
            return len(self.samples_ns) >= 2

    class Fake:
        def __init__(self, name):
            self.timer = FakeTimer(name)

    time_interleaved([Fake("A"), Fake("B")], block_runs=1)
    assert order == ["A", "B", "B", "A"]


def test_multi_input_int64_model_with_symbolic_dims(tmp_path):
    result, = bench(token_model(tmp_path / "tok.onnx", vocab=30),
                    BenchConfig(**QUICK, batch=2, shapes={"input_ids": [2, 32],
                                                          "attention_mask": [2, 32]}))
    assert result["input_shapes"] == {"input_ids": [2, 32], "attention_mask": [2, 32]}
    assert result["throughput_per_s"] == pytest.approx(2e3 / result["latency_ms"]["mean"])


def test_old_opset_model(models):
    result, = bench(models["opset9"], BenchConfig(**QUICK))
    assert result["params"] == 12 and result["latency_ms"]["p50"] > 0


def test_external_data_counts_in_size_and_params(tmp_path):
    path = external_data_model(tmp_path)
    data_file = tmp_path / "weights.bin"
    assert data_file.stat().st_size >= (64 * 32 + 32) * 4
    result, = bench(path, BenchConfig(**QUICK))
    assert result["size_bytes"] == path.stat().st_size + data_file.stat().st_size
    assert result["params"] == 64 * 32 + 32


def test_missing_external_data_is_named(tmp_path):
    path = external_data_model(tmp_path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ValueError, match="weights.bin.*is missing"):
        bench(path, BenchConfig(**QUICK))


def test_top1_accuracy_over_the_whole_set_in_batches(tmp_path):
    path = matmul_add(tmp_path / "mm.onnx")
    x = np.random.default_rng(3).standard_normal((150, 16)).astype(np.float32)
    predicted = reference_outputs(x).argmax(1)
    labels = predicted.copy()
    labels[:30] = (labels[:30] + 1) % 10  # 30 of 150 wrong: accuracy 0.8
    result, = bench(path, BenchConfig(**QUICK), {"x": x, "labels": labels})
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["eval_rows"] == 150  # 64 + 64 + a partial batch of 22


def test_fixed_batch_model_is_evaluated_row_by_row(tmp_path):
    path = matmul_add(tmp_path / "mm.onnx", batch=1)
    x = np.random.default_rng(4).standard_normal((7, 16)).astype(np.float32)
    result, = bench(path, BenchConfig(**QUICK), {"x": x, "labels": reference_outputs(x).argmax(1)})
    assert result["accuracy"] == 1.0 and result["eval_rows"] == 7


def test_reference_outputs_give_errors_and_cosine(tmp_path):
    path = matmul_add(tmp_path / "mm.onnx")
    x = np.random.default_rng(5).standard_normal((20, 16)).astype(np.float32)
    exact, = bench(path, BenchConfig(**QUICK), {"x": x, "reference": reference_outputs(x)})
    assert exact["reference"]["max_abs_error"] < 1e-4
    assert exact["reference"]["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    off = reference_errors(reference_outputs(x) + 0.5, reference_outputs(x))
    assert off["max_abs_error"] == pytest.approx(0.5) and off["mean_cosine"] < 1.0


def test_reference_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="reference outputs have shape"):
        reference_errors(np.zeros((4, 10)), np.zeros((4, 9)))


def test_session_memory_is_attributed_to_the_model(tmp_path):
    big = matmul_add(tmp_path / "big.onnx", features=2048, classes=2048)  # 16 MiB of weights
    small, big_result = bench([matmul_add(tmp_path / "small.onnx"), big], BenchConfig(**QUICK))
    assert big_result["memory_mb"]["peak"] >= 12
    assert small["memory_mb"]["peak"] < big_result["memory_mb"]["peak"]
    assert big_result["memory_mb"]["method"]


def test_data_and_shape_overrides_together_are_refused(models):
    x = np.zeros((2, 16), np.float32)
    with pytest.raises(ValueError, match="give one or the other"):
        bench(models["matmul"], BenchConfig(**QUICK, shapes={"x": [1, 16]}), {"x": x})


def test_a_run_that_fails_is_one_clear_error(tmp_path):
    path = token_model(tmp_path / "tok.onnx")
    with pytest.raises(ValueError, match="could not run .* with inputs input_ids\\[1, 8\\]"):
        bench(path, BenchConfig(**QUICK, shapes={"input_ids": [1, 8],
                                                 "attention_mask": [1, 9]}))


@pytest.mark.parametrize("kwargs, message", [
    ({"provider": "cdua"}, "did you mean 'cuda'"),
    ({"batch": 0}, "bench.batch must be >= 1"),
    ({"min_runs": 0}, "bench.min_runs must be >= 1"),
    ({"min_time_s": -1.0}, "bench.min_time_s must be >= 0"),
    ({"graph_optimization": "max"}, "expected one of disable, basic, extended, all"),
    ({"shapes": {"x": [1, 0]}}, "positive integers"),
])
def test_bad_config_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**kwargs)


def test_profiles_set_the_edge_controls_and_flags_win():
    edge = BenchConfig.with_profile("edge")
    assert edge.threads == 1 and edge.spin_wait is False and edge.sequential is True
    assert BenchConfig.with_profile("edge", threads=2).threads == 2
    with pytest.raises(ValueError, match="did you mean 'edge'"):
        BenchConfig.with_profile("edgy")


@pytest.mark.gpu
def test_cuda_uses_io_binding_and_reports_gpu_memory(tmp_path):
    result, = bench(matmul_add(tmp_path / "mm.onnx"), BenchConfig(provider="cuda", **QUICK))
    assert result["provider"] == "CUDAExecutionProvider" and result["io_binding"]
    assert result["memory_mb"]["gpu_peak"] is not None and result["memory_mb"]["gpu_method"]


def test_each_shape_applies_to_the_models_that_have_that_input(tmp_path):
    tokens = token_model(tmp_path / "tok.onnx", vocab=30)
    dense = matmul_add(tmp_path / "dense.onnx")
    results = bench([tokens, dense], BenchConfig(**QUICK, shapes={"input_ids": [1, 12],
                                                                 "attention_mask": [1, 12]}))
    assert results[0]["input_shapes"] == {"input_ids": [1, 12], "attention_mask": [1, 12]}
    assert results[1]["input_shapes"] == {"x": [1, 16]}


def test_a_shape_no_model_has_is_named_with_the_inputs_there_are(tmp_path):
    paths = [token_model(tmp_path / "tok.onnx"), matmul_add(tmp_path / "dense.onnx")]
    with pytest.raises(ValueError, match=r"no input 'input_id' in any model \(did you mean "
                                         r"'input_ids'\?\); their inputs are attention_mask, "
                                         r"input_ids, x"):
        bench(paths, BenchConfig(**QUICK, shapes={"input_id": [1, 12]}))
