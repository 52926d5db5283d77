"""Quantization: modes, presets, accuracy-aware repair, speed-gate causes, and footguns.

Models are built with onnx.helper in tmp_path (no torch export), so every test runs in
about a second.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.compress.quantize import (PRESETS, OutputCheckFailed, QuantizationCheckError,
                                        QuantizeConfig, count_ops, quantize, quantize_config,
                                        resolve_settings, speed_gate_cause)
from edgepack.cli.main import main

RNG = np.random.default_rng(0)


def cfg(**kwargs) -> QuantizeConfig:
    """A config for tests that assert graphs and figures: the speed check and latency-aware
    decisions are measured on this machine, so only the tests about them turn them on
    (with the timings injected: no test races the clock)."""
    mode = kwargs.pop("mode", "static")
    base = {"speed_check": False, **({"latency_aware": False} if mode in INT8 else {})}
    return quantize_config(mode, **{**base, **kwargs})


INT8 = ("dynamic", "static")


def _save(path, nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def tiny_cnn(path, channels=8, length=16, classes=4):
    """Conv -> Relu -> Flatten -> Gemm on (N, 1, length) signals, dynamic batch."""
    w = RNG.standard_normal((channels, 1, 3)).astype(np.float32)
    fc = (RNG.standard_normal((classes, channels * length)) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], name="fc", transB=1)]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             ["batch", 1, length])],
                 [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
                 {"w": w, "fc": fc})


def outlier_mlp(path, features=8, classes=4, pre=False):
    """Two MatMuls; the first gives one huge column (x1000) that the second ignores.

    Per-tensor int8 quantization of the hidden tensor spends its whole range on the huge
    column and rounds the useful ones to zero: accuracy collapses unless the second MatMul
    (which quantizes its input) is kept in float. ``pre``: a well-behaved MatMul first,
    which int8 handles (so a repaired model still has something in int8).
    """
    w1 = np.eye(features, dtype=np.float32)
    w1[0, 0] = 1000.0
    w2 = RNG.standard_normal((features, classes)).astype(np.float32)
    w2[0] = 0.0
    first = "x"
    nodes, weights = [], {"w1": w1, "w2": w2}
    if pre:
        weights["w0"] = (np.eye(features) + 0.1 * RNG.standard_normal((features, features))
                         ).astype(np.float32)
        nodes.append(helper.make_node("MatMul", ["x", "w0"], ["p"], name="pre"))
        first = "p"
    nodes += [helper.make_node("MatMul", [first, "w1"], ["h"], name="hidden"),
              helper.make_node("MatMul", ["h", "w2"], ["logits"], name="head")]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             ["batch", features])],
                 [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
                 weights)


def outlier_branches(path, features=8, classes=4):
    """Two outlier paths (see :func:`outlier_mlp`) summed: keeping one head in float is not
    enough, the other still rounds its useful columns to zero."""
    w1 = np.eye(features, dtype=np.float32)
    w1[0, 0] = w1[1, 1] = 1000.0
    heads = {}
    for branch, outlier in (("a", 0), ("b", 1)):
        w = RNG.standard_normal((features, classes)).astype(np.float32)
        w[[0, 1]] = 0.0
        w[outlier] = 0.0
        heads[f"w_{branch}"] = w
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="hidden"),
             helper.make_node("Mul", ["h", "one"], ["h_a"], name="copy_a"),
             helper.make_node("Mul", ["h", "one"], ["h_b"], name="copy_b"),
             helper.make_node("MatMul", ["h_a", "w_a"], ["a"], name="head_a"),
             helper.make_node("MatMul", ["h_b", "w_b"], ["b"], name="head_b"),
             helper.make_node("Add", ["a", "b"], ["logits"], name="sum")]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             ["batch", features])],
                 [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
                 {"w1": w1, "one": np.array(1.0, dtype=np.float32), **heads})


def overflowing_model(path):
    """y = 1 / (x @ diag(1000, 0.001)): finite in float32 for x ~ 1, but per-tensor int8
    quantization of the MatMul output (range +-1000, step ~8) rounds 0.001 to 0: y = Inf."""
    w = np.diag([1000.0, 0.001]).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="scale"),
             helper.make_node("Div", ["one", "h"], ["y"], name="inverse")]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
                 {"w": w, "one": np.array(1.0, dtype=np.float32)})


def labelled(model_path, rows, shape):
    """Random inputs labelled by the float model's own predictions (fp32 accuracy 1.0)."""
    import onnxruntime as ort

    x = RNG.standard_normal((rows, *shape)).astype(np.float32)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    labels = session.run(None, {"x": x})[0].argmax(1)
    return x, labels


@pytest.fixture
def cnn(tmp_path):
    return tiny_cnn(tmp_path / "cnn.onnx")


@pytest.fixture
def cnn_data(cnn):
    return labelled(cnn, 96, (1, 16))


# --------------------------------------------------------------------------- modes


@pytest.mark.parametrize("config", [
    cfg(mode="static", calibration="minmax"),
    cfg(mode="static", calibration="entropy", per_channel=True),
    cfg(mode="static", calibration="percentile", symmetric=True),
    cfg(mode="static", format="qoperator", reduce_range=True),
    cfg(mode="dynamic", per_channel=True),
    cfg(mode="fp16"),
], ids=["minmax", "entropy-pc", "percentile-sym", "qoperator", "dynamic", "fp16"])
def test_every_mode_writes_a_close_finite_model(tmp_path, cnn, cnn_data, config):
    import onnxruntime as ort

    x, labels = cnn_data
    out = tmp_path / "q.onnx"
    result = quantize(cnn, config, out, calibration=[(x[:64], labels[:64])])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    agreement = (session.run(None, {"x": x})[0].argmax(1) == labels).mean()
    assert agreement >= 0.85, f"{config.mode}: quantized predictions agree on {agreement:.0%}"
    assert result.record["mode"] == config.mode
    assert not list(tmp_path.glob(".quantize.*")), "scratch folder left behind"


def test_static_qdq_inserts_qdq_and_qoperator_uses_qlinear_ops(tmp_path, cnn, cnn_data):
    x, labels = cnn_data
    qdq = quantize(cnn, cfg(), tmp_path / "a.onnx", calibration=[(x, labels)])
    qop = quantize(cnn, cfg(format="qoperator"), tmp_path / "b.onnx",
                   calibration=[(x, labels)])
    assert qdq.record["ops"].get("QuantizeLinear", 0) >= 1
    assert qop.record["ops"].get("QLinearConv", 0) == 1
    # ORT's guide: S8S8 with QOperator is slow on x86-64, so QOperator defaults to U8S8;
    # QDQ takes the auto preset's choice for this machine.
    from edgepack.compress.quantize.presets import choose_preset

    assert qop.record["activation_type"] == "uint8"
    assert qdq.record["activation_type"] == PRESETS[choose_preset()[0]]["activation_type"]
    plain = quantize(cnn, cfg(preset=""), tmp_path / "c.onnx", calibration=[(x, labels)])
    assert plain.record["activation_type"] == "int8" and plain.record["auto_choice"] == ""


def test_int4_turns_matmuls_into_matmulnbits(tmp_path):
    w = RNG.standard_normal((64, 32)).astype(np.float32)
    model = _save(tmp_path / "mm.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])], {"w": w})
    x = RNG.standard_normal((8, 64)).astype(np.float32)
    result = quantize(model, cfg(mode="int4", block_size=32), tmp_path / "q.onnx",
                      calibration={"x": x})
    assert count_ops(result.artifact) == {"MatMulNBits": 1}
    assert result.record["size_bytes"] < result.record["size_bytes_before"]


def test_int4_on_a_model_without_matmul_is_refused(tmp_path, cnn):
    with pytest.raises(ValueError, match="found no MatMul"):
        quantize(cnn, cfg(mode="int4"), tmp_path / "q.onnx")


def test_old_opset_is_upgraded_before_quantizing(tmp_path, cnn_data):
    model = tiny_cnn(tmp_path / "old.onnx")
    proto = onnx.load(str(model))
    proto.opset_import[0].version = 11
    onnx.save(proto, str(model))
    x, labels = cnn_data
    result = quantize(model, cfg(per_channel=True), tmp_path / "q.onnx",
                      calibration=[(x, labels)])
    assert result.record["ops"].get("DequantizeLinear", 0) >= 1


def test_opset_that_cannot_be_upgraded_is_refused_naming_the_op(tmp_path, monkeypatch):
    from onnx import version_converter

    from edgepack.compress.quantize import upgrade_opset

    model = tiny_cnn(tmp_path / "old.onnx")
    proto = onnx.load(str(model))
    proto.opset_import[0].version = 11
    onnx.save(proto, str(model))

    def refuse(*_args):  # the converter's own wording for an op without a newer schema
        raise RuntimeError("convert_graph: Assertion failed: Op '%s' has no registered schema;"
                           " cannot convert it from version %lld to %lld.Gemm1113")
    monkeypatch.setattr(version_converter, "convert_version", refuse)
    with pytest.raises(ValueError, match=r"op 'Gemm' \(node 'fc'\) cannot be upgraded"):
        upgrade_opset(model, tmp_path)


# --------------------------------------------------------------------------- presets


def resolved(**kwargs):
    """The settings a config resolves to when it quantizes (presets filled in)."""
    return resolve_settings(cfg(**kwargs))[0]


def test_presets_fill_unset_fields_and_explicit_fields_win():
    vnni = resolved(preset="x86-vnni")
    # x86 kernels are U8S8 (u8 activations x s8 weights) with or without VNNI.
    assert (vnni.activation_type, vnni.per_channel, vnni.reduce_range) == ("uint8", True, False)
    avx2 = resolved(preset="x86-avx2")
    assert (avx2.activation_type, avx2.reduce_range) == ("uint8", True)
    trt = resolved(preset="gpu-tensorrt")
    assert (trt.format, trt.symmetric, trt.per_channel) == ("qdq", True, True)
    assert resolved(preset="arm64", per_channel=False).per_channel is False
    assert resolved(preset="arm64").activation_type == "int8"
    assert resolved(preset="arm64-nodot").activation_type == "uint8"
    assert set(PRESETS) == {"x86-vnni", "x86-amx", "x86-avx2", "arm64", "arm64-nodot",
                            "gpu-tensorrt"}


def test_a_config_is_a_plain_value_its_preset_resolved_only_when_quantizing(monkeypatch):
    """The same config on two machines: equal values, different resolutions."""
    from edgepack.compress.quantize import presets

    config = cfg(preset="auto")
    assert config.settings.per_channel is None and config.settings.reduce_range is None
    monkeypatch.setattr(presets, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    monkeypatch.setattr(presets, "machine_arch", lambda: "x86_64")
    vnni, why = resolve_settings(config)
    monkeypatch.setattr(presets, "cpu_flags", lambda: frozenset({"avx2"}))
    avx2, _ = resolve_settings(config)
    assert (vnni.reduce_range, avx2.reduce_range) == (False, True) and why.startswith("x86-vnni")
    assert config.to_dict() == cfg(preset="auto").to_dict()   # nothing of either machine


def test_preset_config_round_trips_through_a_dict():
    config = cfg(preset="x86-avx2", per_channel=False, accuracy_aware=True)
    assert QuantizeConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "x86"}, "quantize.preset='x86' is not valid"),
    ({"preset": "gpu-tensorrt", "mode": "dynamic"}, "TensorRT has no 'dynamic'"),
    ({"activation_type": "int16"}, "quantize.activation_type='int16' is not valid"),
    ({"format": "qdqq"}, "did you mean 'qdq'"),
    ({"max_float_nodes": 0}, "quantize.max_float_nodes must be >= 1"),
    ({"mode": "int4", "block_size": 48}, "power of two"),
    ({"mode": "dynamic", "block_size": 32}, "'block_size' is a setting of quantize method 'int4'"),
    ({"mode": "int3"}, "quantize.mode='int3' is not valid.*did you mean 'int4'"),
    ({"tolerance": -0.1}, "quantize.tolerance must be >= 0"),
])
def test_bad_config_is_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize_config(**kwargs)


def test_tensorrt_preset_gives_zero_points_of_zero(tmp_path, cnn, cnn_data):
    x, labels = cnn_data
    # Symmetric int8 activations cost this tiny CNN some cosine (0.984 here): the check's
    # tolerance is loosened so the graph TensorRT would get is what is tested.
    out = quantize(cnn, cfg(preset="gpu-tensorrt", min_cosine=0.95), tmp_path / "q.onnx",
                   calibration=[(x, labels)]).artifact
    graph = onnx.load(str(out)).graph
    zero_points = {i.name: numpy_helper.to_array(i) for i in graph.initializer
                   if i.name.endswith("zero_point")}
    assert zero_points and all((v == 0).all() and v.dtype == np.int8
                               for v in zero_points.values())


# --------------------------------------------------------------------------- accuracy-aware


def test_a_failed_output_check_is_repaired_keeping_the_worst_nodes_in_float(tmp_path):
    model = outlier_mlp(tmp_path / "mlp.onnx", pre=True)
    x, labels = labelled(model, 256, (8,))
    result = quantize(model, cfg(max_float_nodes=3), tmp_path / "q.onnx",
                      calibration=[(x, labels)])
    search, check = result.record["accuracy_search"], result.record["output_check"]
    first, last = search["steps"][0], search["steps"][-1]
    assert first["float_nodes"] == [] and not first["passed"], "the outlier must hurt first"
    # Stops at the first model that passes the same output check.
    assert last["passed"] and not any(s["passed"] for s in search["steps"][:-1])
    assert search["ranking"][0]["node"] == "head" == search["kept_in_float"][0]
    assert "pre" not in search["kept_in_float"] and result.record["ops"]["QuantizeLinear"] >= 1
    assert check["passed"] and check["outputs"]["logits"]["mean_cosine"] >= 0.99
    assert check["outputs"]["logits"]["mean_cosine"] == last["score"]


def test_a_model_no_step_repairs_is_refused_and_kept_only_where_asked(tmp_path):
    model = outlier_branches(tmp_path / "two.onnx")
    x, labels = labelled(model, 256, (8,))
    out, kept = tmp_path / "q.onnx", tmp_path / "failed" / "q.onnx"
    with pytest.raises(OutputCheckFailed) as info:
        quantize(model, cfg(max_float_nodes=1), out, calibration=[(x, labels)],
                 keep_failed=kept)
    message = str(info.value)
    assert info.value.exit_code == 1 and "mean cosine" in message and "< 0.99" in message
    assert "top-1 agreement" in message and "likely cause: " in message
    assert not out.exists() and kept.is_file() and str(kept) in message
    assert not list(tmp_path.glob(".quantize.*")), "scratch folder left behind"


def test_without_the_search_a_failed_check_is_refused_at_once(tmp_path):
    model = outlier_mlp(tmp_path / "mlp.onnx", pre=True)
    x, labels = labelled(model, 256, (8,))
    with pytest.raises(OutputCheckFailed, match="outputs differ from the fp32") as info:
        quantize(model, cfg(accuracy_aware=False, search=False), tmp_path / "q.onnx",
                 calibration={"x": x})
    assert info.value.figures["outputs"]["logits"]["mean_cosine"] < 0.99
    assert not (tmp_path / "q.onnx").exists()


def test_labelled_evaluation_data_checks_the_accuracy_drop_too(tmp_path, cnn, cnn_data):
    x, labels = cnn_data
    result = quantize(cnn, cfg(min_cosine=0.95), tmp_path / "q.onnx", calibration={"x": x},
                      evaluation=[(x, labels)], tolerance=0.1)
    check = result.record["output_check"]
    assert result.record["held_out"] == {"rows": 96, "source": "evaluation data"}
    assert check["top1_accuracy"]["float"] == 1.0 and check["top1_accuracy"]["drop"] <= 0.1
    model = outlier_mlp(tmp_path / "mlp.onnx", pre=True)
    x, labels = labelled(model, 128, (8,))
    with pytest.raises(OutputCheckFailed, match="top-1 accuracy drop 0.[0-9]+ > tolerance 0.1"):
        quantize(model, cfg(accuracy_aware=False), tmp_path / "q.onnx",
                 calibration={"x": x}, evaluation=[(x, labels)], tolerance=0.1)


# --------------------------------------------------------------------------- speed gate


def test_speed_gate_cause_names_ops_left_in_float(tmp_path):
    model = outlier_mlp(tmp_path / "mlp.onnx")
    x, labels = labelled(model, 64, (8,))
    # The outlier ruins this model in int8; the output check is switched off to get one.
    unchecked = cfg(min_cosine=-1.0, min_top1_agreement=0.0, max_norm_change=1e9)
    out = quantize(model, unchecked, tmp_path / "q.onnx", calibration={"x": x}).artifact
    assert speed_gate_cause(out).startswith("likely cause: ")
    partial = tmp_path / "partial.onnx"
    from edgepack.compress.quantize import prepare, quantize_into

    prepared = prepare(model, tmp_path)
    quantize_into(prepared, partial, "static", resolved(), [{"x": x}], exclude=["head"])
    cause = speed_gate_cause(partial)
    assert "compute ops left in float (1 MatMul)" in cause, cause


def test_speed_gate_cause_on_a_fully_int8_model_blames_per_call_overhead(tmp_path, cnn, cnn_data):
    x, labels = cnn_data
    out = quantize(cnn, cfg(format="qoperator", min_cosine=0.9, min_top1_agreement=0.5), tmp_path / "q.onnx",
                   calibration={"x": x}).artifact
    assert "too small" in speed_gate_cause(out)


# --------------------------------------------------------------------------- footguns


@pytest.mark.parametrize("make_data, message", [
    (lambda x: {"input": x}, "array 'input' is not an input of the model"),
    (lambda x: {"x": x[:, 0, :]}, "input 'x' has shape \\[96, 16\\]; expected rank 3"),
    (lambda x: {"x": x.astype(np.float64)}, "input 'x' has dtype float64; expected float32"),
    (lambda x: {"x": x[:, :, :8]}, "input 'x' has shape \\[96, 1, 8\\]; expected"),
    (lambda x: [], "calibration data is empty"),
    (lambda x: {"x": x[:0]}, "input 'x' (is empty|has no rows)"),
], ids=["name", "rank", "dtype", "length", "empty-list", "zero-rows"])
def test_wrong_calibration_data_is_refused_naming_the_input(tmp_path, cnn, cnn_data,
                                                            make_data, message):
    x, _ = cnn_data
    out = tmp_path / "q.onnx"
    with pytest.raises(ValueError, match=message):
        quantize(cnn, cfg(), out, calibration=make_data(x))
    assert not out.exists()


def test_static_without_calibration_data_is_refused(tmp_path, cnn):
    with pytest.raises(ValueError, match="needs calibration data"):
        quantize(cnn, cfg(mode="static"), tmp_path / "q.onnx")


def test_partial_last_batch_and_sample_limit_are_counted_exactly(tmp_path, cnn, cnn_data):
    x, labels = cnn_data
    batches = [(x[:40], labels[:40]), (x[40:80], labels[40:80]), (x[80:90], labels[80:90])]
    full = quantize(cnn, cfg(), tmp_path / "a.onnx", calibration=batches)
    # The last quarter of the rows is held out for the output check, never calibrated on.
    assert full.record["calibration_samples"] == 68 and full.record["held_out"]["rows"] == 22
    limited = quantize(cnn, cfg(calibration_samples=50), tmp_path / "b.onnx",
                       calibration=iter(batches))
    assert limited.record["calibration_samples"] + limited.record["held_out"]["rows"] == 50


def test_torch_batches_calibrate_like_arrays(tmp_path, cnn, cnn_data):
    import torch

    x, labels = cnn_data
    loader = [(torch.from_numpy(x[i:i + 32]), torch.from_numpy(labels[i:i + 32]))
              for i in range(0, 96, 32)]
    result = quantize(cnn, cfg(), tmp_path / "q.onnx", calibration=loader)
    assert result.record["calibration_samples"] == 72 and result.record["held_out"]["rows"] == 24


def test_nan_check_fires_on_a_model_that_overflows_when_quantized(tmp_path):
    model = overflowing_model(tmp_path / "big.onnx")
    x = np.ones((4, 2), dtype=np.float32)
    out = tmp_path / "q.onnx"
    with pytest.raises(QuantizationCheckError, match="NaN or Inf in output 'y'") as info:
        quantize(model, cfg(mode="static"), out, calibration={"x": x})
    assert info.value.exit_code == 1
    assert not out.exists(), "a model that failed its check must not be written"


def test_a_float_model_that_already_gives_inf_is_refused_as_bad_input(tmp_path):
    model = overflowing_model(tmp_path / "big.onnx")
    x = np.zeros((2, 2), dtype=np.float32)  # 1 / 0 in float32 already
    with pytest.raises(ValueError, match="float model big.onnx already gives NaN or Inf"):
        quantize(model, cfg(mode="static"), tmp_path / "q.onnx",
                 calibration={"x": x})


def test_fixed_batch_model_calibrates_one_row_at_a_time(tmp_path, cnn_data):
    model = tiny_cnn(tmp_path / "fixed.onnx")
    proto = onnx.load(str(model))
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(proto, str(model))
    x, labels = cnn_data
    # 4 calibration rows give a rough model: this test is about the batching, not quality.
    result = quantize(model, cfg(min_cosine=0.95, max_norm_change=1.0), tmp_path / "q.onnx",
                      calibration=[(x[:5], labels[:5])])
    # Whole batches are held out: 4 rows calibrate, 1 checks.
    assert result.record["calibration_samples"] == 4 and result.record["held_out"]["rows"] == 1


# --------------------------------------------------------------------------- command line


def test_cli_quantizes_with_a_preset_and_npz_data(tmp_path, cnn, cnn_data, capsys):
    x, labels = cnn_data
    np.savez(tmp_path / "calib.npz", x=x, labels=labels)
    out = tmp_path / "q.onnx"
    code = main(["quantize", str(cnn), "-o", str(out), "--preset", "x86-vnni",
                 "--data", str(tmp_path / "calib.npz"), "--eval-data",
                 str(tmp_path / "calib.npz"), "--tolerance", "0.05", "--min-cosine", "0.95",
                 "--no-speed-check", "--no-latency-aware"])
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "preset x86-vnni" in printed and "preset auto" not in printed
    assert "output check passed on 96 rows of evaluation data: logits: mean cosine" in printed
    assert "speed check: speed check skipped" in printed


@pytest.mark.parametrize("args, message", [
    (["--data", "missing.npz"], "does not exist"),
    (["--preset", "arm"], "did you mean 'arm64'"),
    (["--mode", "static"], "needs calibration data"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, cnn, capsys, args, message):
    code = main(["quantize", str(cnn), "-o", str(tmp_path / "q.onnx"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_nan_check_failure_exits_1(tmp_path, capsys):
    model = overflowing_model(tmp_path / "big.onnx")
    np.savez(tmp_path / "calib.npz", x=np.ones((4, 2), dtype=np.float32))
    code = main(["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--mode", "static",
                 "--data", str(tmp_path / "calib.npz"), "--no-latency-aware"])
    assert code == 1 and "NaN or Inf" in capsys.readouterr().err
