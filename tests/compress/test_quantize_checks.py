"""Issue 11: the output check, the auto preset, the speed check, latency-aware mixed precision
and transformer handling.

Timings are never raced here: the speed check and the profiler are fed injected figures
(``time_models`` and ``_profile`` are replaced), so each verdict is decided by the figures the
test gives, and everything else (quantizing, checking, writing, the record) runs for real.
"""

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgepack.compress.quantize import (SpeedCheckFailed, count_ops, quantize)
from edgepack.compress.quantize.presets import choose_preset
from edgepack.compress.quantize.mixed_precision import charge_to_nodes, name_owners
from edgepack.compress.quantize.output_check import failures, output_figures, split_held_out
from edgepack.cli.main import main
from tests.compress.test_quantize import _save, cfg, labelled, outlier_mlp, tiny_cnn

RNG = np.random.default_rng(1)
SPEED = sys.modules["edgepack.compress.quantize.speed_check"]
MIXED = sys.modules["edgepack.compress.quantize.mixed_precision"]


@pytest.fixture
def cnn(tmp_path):
    return tiny_cnn(tmp_path / "cnn.onnx")


@pytest.fixture
def cnn_x(cnn):
    return labelled(cnn, 96, (1, 16))[0]


def tiny_attention(path, hidden=16, seq=8, vocab=50):
    """One self-attention block with token inputs and the additive attention-mask path:
    embeddings -> Q, K, V (weight MatMuls) -> softmax(QKᵀ + (1 - mask) * -1e4) V -> out."""
    w = {n: (RNG.standard_normal((hidden, hidden)) / 4).astype(np.float32)
         for n in ("wq", "wk", "wv", "wo")}
    w["emb"] = RNG.standard_normal((vocab, hidden)).astype(np.float32)
    w["one"], w["big"] = np.array(1.0, np.float32), np.array(-1e4, np.float32)
    w["axes"] = np.array([1], np.int64)
    mm = lambda a, b, o: helper.make_node("MatMul", [a, b], [o], name=o)  # noqa: E731
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["x"], name="embed"),
             mm("x", "wq", "q"), mm("x", "wk", "k"), mm("x", "wv", "v"),
             helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
             mm("q", "kt", "scores"),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], name="cast", to=1),
             helper.make_node("Sub", ["one", "maskf"], ["inv"], name="inv"),
             helper.make_node("Mul", ["inv", "big"], ["bias"], name="bias"),
             helper.make_node("Unsqueeze", ["bias", "axes"], ["bias3"], name="bias3"),
             helper.make_node("Add", ["scores", "bias3"], ["masked"], name="masked"),
             helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
             mm("probs", "v", "ctx"), mm("ctx", "wo", "last_hidden_state")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", seq])
              for n in ("input_ids", "attention_mask")]
    out = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                         ["batch", seq, hidden])]
    return _save(path, nodes, inputs, out, w)


def token_data(rows=32, seq=8, vocab=50):
    ids = RNG.integers(0, vocab, (rows, seq)).astype(np.int64)
    mask = np.ones((rows, seq), np.int64)
    mask[:, seq // 2:] = RNG.integers(0, 2, (rows, seq - seq // 2))
    return {"input_ids": ids, "attention_mask": mask}


def fake_timings(latencies_ms):
    """A ``time_models`` that reports the given median latencies, in the order asked."""
    def time_models(paths, config, feeds):
        assert len(paths) == len(latencies_ms)
        return [{"p50_ms": ms, "p90_ms": ms, "runs": config.speed_min_runs}
                for ms in latencies_ms]
    return time_models


# --------------------------------------------------------------------------- auto preset


@pytest.mark.parametrize("provider, arch, flags, preset", [
    ("cpu", "x86_64", {"avx2", "avx512f", "avx512_vnni"}, "x86-vnni"),
    ("cpu", "x86_64", {"avx2", "avx_vnni"}, "x86-vnni"),
    ("cpu", "x86_64", {"avx2", "avx512_vnni", "amx_int8", "amx_tile", "amx_bf16"}, "x86-amx"),
    ("cpu", "x86_64", {"avx2", "avx512_vnni", "amx_tile"}, "x86-vnni"),   # no int8 tiles
    ("cpu", "x86_64", {"avx2", "fma"}, "x86-avx2"),
    ("cpu", "arm64", {"asimd", "asimddp"}, "arm64"),
    ("cpu", "arm64", {"asimd"}, "arm64-nodot"),
    ("cuda", "x86_64", {"avx2"}, "gpu-tensorrt"),
])
def test_auto_preset_follows_the_cpu_flags_and_the_provider(provider, arch, flags, preset):
    chosen, why = choose_preset(provider, arch, flags)
    assert chosen == preset and why


def test_auto_preset_is_the_default_and_is_recorded(tmp_path, cnn, cnn_x):
    config = cfg(mode="dynamic")
    assert config.settings.preset == "auto" and config.settings.per_channel is None
    result = quantize(cnn, config, tmp_path / "q.onnx", calibration={"x": cnn_x})
    assert result.record["auto_choice"].split(" ")[0] == choose_preset()[0]
    assert result.record["per_channel"] is True  # every preset quantizes per channel
    # The record keeps what was asked beside what this machine ran.
    assert result.record["requested"]["per_channel"] is None
    assert result.record["resolved"]["per_channel"] is True


# --------------------------------------------------------------------------- output check


def test_held_out_rows_are_the_last_share_and_never_calibrate():
    batches = [{"x": np.arange(n)[:, None] + start} for start, n in ((0, 40), (40, 40), (80, 10))]
    calibration, held = split_held_out(batches, 0.25)
    calibrated = np.concatenate([b["x"] for b in calibration]).ravel()
    checked = np.concatenate([b["x"] for b in held]).ravel()
    assert list(calibrated) == list(range(68)) and list(checked) == list(range(68, 90))
    assert split_held_out([{"x": np.zeros((1, 1))}], 0.25)[1] == []
    fixed = [{"x": np.full((2, 1), i)} for i in range(4)]
    assert [b["x"][0, 0] for b in split_held_out(fixed, 0.25, fixed_batch=True)[1]] == [3]


def test_centred_cosine_sees_what_a_shared_component_hides():
    shared = np.full((32, 10), 50.0)
    ref = shared + RNG.standard_normal((32, 10))
    got = shared + RNG.standard_normal((32, 10))  # the input-dependent part is lost
    figures = output_figures("features", ref, got, None)
    assert figures["mean_cosine"] > 0.99 and figures["centred_cosine"] < 0.3
    assert failures({"f": figures}, 0.99, 0.9, None) == []
    assert "centred cosine" in failures({"f": figures}, 0.99, 0.9, 0.9)[0]


def test_padded_positions_are_not_compared_and_classifiers_get_top1():
    ref = RNG.standard_normal((20, 6, 4))
    got = ref.copy()
    got[:, 3:] = 100.0  # padding: garbage there is never used
    mask = np.concatenate([np.ones((20, 3)), np.zeros((20, 3))], 1)[..., None]
    assert output_figures("last_hidden_state", ref, got, mask)["mean_cosine"] == 1.0
    assert output_figures("last_hidden_state", ref, got, None)["mean_cosine"] < 0.5
    logits = RNG.standard_normal((20, 5))
    swapped = logits[:, ::-1].copy()
    figures = output_figures("logits", logits, swapped, None)
    assert figures["top1_agreement"] < 0.5 and "top-1 agreement" in failures(
        {"logits": figures}, -1.0, 0.9, None)[0]
    assert "top1_agreement" not in output_figures("pooled_embedding", logits, logits, None)
    few = output_figures("logits", logits[:4], swapped[:4], None)
    assert failures({"logits": few}, -1.0, 0.9, None) == [], "4 rows: reported, not gated"


def test_without_data_the_check_runs_on_generated_inputs(tmp_path, cnn):
    result = quantize(cnn, cfg(mode="dynamic"), tmp_path / "q.onnx")
    held = result.record["held_out"]
    assert held["rows"] == 16 and held["source"].startswith("generated inputs")
    logits = result.record["output_check"]["outputs"]["logits"]
    assert logits["mean_cosine"] >= 0.99 and {"centred_cosine", "max_abs_error",
                                              "mean_abs_error", "top1_agreement"} <= set(logits)


def test_cli_exits_1_on_a_failed_output_check_and_keeps_the_model_only_where_asked(
        tmp_path, capsys):
    model = outlier_mlp(tmp_path / "mlp.onnx", pre=True)
    np.savez(tmp_path / "calib.npz", x=RNG.standard_normal((64, 8)).astype(np.float32))
    out, kept = tmp_path / "q.onnx", tmp_path / "kept.onnx"
    args = ["quantize", str(model), "-o", str(out), "--data", str(tmp_path / "calib.npz"),
            "--no-accuracy-aware", "--no-speed-check", "--no-latency-aware"]
    assert main(args) == 1 and not out.exists()
    err = capsys.readouterr().err
    assert "mean cosine" in err and "< 0.99" in err and "likely cause" in err
    assert main([*args, "--keep-failed", str(kept)]) == 1 and kept.is_file()
    assert not out.exists()
    assert main([*args, "--min-cosine", "-1", "--min-top1-agreement", "0",
                 "--max-norm-change", "100"]) == 0 and out.is_file()


# --------------------------------------------------------------------------- speed check


def test_a_slower_model_is_refused_unless_allowed(tmp_path, cnn, cnn_x, monkeypatch):
    monkeypatch.setattr(SPEED, "time_models", fake_timings([1.0, 1.25]))
    out = tmp_path / "q.onnx"
    config = cfg(mode="dynamic", speed_check=True, speed_min_runs=3)
    with pytest.raises(SpeedCheckFailed, match=r"not faster than its input.*0\.80x") as info:
        quantize(cnn, config, out, calibration={"x": cnn_x})
    assert info.value.exit_code == 1 and not out.exists()
    assert info.value.figures["quantized"]["p50_ms"] == 1.25
    allowed = quantize(cnn, cfg(mode="dynamic", speed_check=True, allow_slower=True), out,
                       calibration={"x": cnn_x})
    assert allowed.record["speed_check"]["speedup"] == 0.8 and out.is_file()


def test_a_faster_model_passes_with_figures_and_skipping_is_explicit(tmp_path, cnn, cnn_x,
                                                                    monkeypatch):
    monkeypatch.setattr(SPEED, "time_models", fake_timings([2.0, 1.0]))
    result = quantize(cnn, cfg(mode="dynamic", speed_check=True, speed_threads=2),
                      tmp_path / "q.onnx", calibration={"x": cnn_x})
    speed = result.record["speed_check"]
    assert speed["speedup"] == 2.0 and speed["threads"] == 2 and speed["provider"] == "cpu"
    skipped = quantize(cnn, cfg(mode="dynamic"), tmp_path / "r.onnx", calibration={"x": cnn_x})
    assert skipped.record["speed_check"] == {"skipped": "speed_check=False"}


def test_speed_check_times_with_bench_harness_interleaved(tmp_path, cnn, cnn_x):
    from edgepack.compress.quantize.speed_check import time_models

    config = cfg(speed_min_runs=3, speed_min_time_s=0.0)
    timed = time_models([cnn, cnn], config, {"x": cnn_x[:1]})
    assert [t["runs"] >= 3 and t["p50_ms"] > 0 for t in timed] == [True, True]


# --------------------------------------------------------------------------- latency-aware


def fake_profiles(float_events, int8_events):
    def profile(model_path, config, feeds, runs):
        return int8_events if model_path.name == "full.onnx" else float_events
    return profile


def test_profiled_nodes_are_charged_to_the_longest_original_name():
    events = [{"name": "/l1/Conv_token_3", "op": "QLinearConv", "us": 5.0},
              {"name": "/l1/Conv_1_token_4", "op": "QLinearConv", "us": 7.0},
              {"name": "/l1/Conv_output_0_DequantizeLinear", "op": "DequantizeLinear", "us": 2.0},
              {"name": "input_QuantizeLinear", "op": "QuantizeLinear", "us": 1.0}]
    owners = {"/l1/Conv": "/l1/Conv", "/l1/Conv_1": "/l1/Conv_1"}
    charged, unowned = charge_to_nodes(events, owners)
    assert charged == {"/l1/Conv": 7.0, "/l1/Conv_1": 7.0} and unowned == 1.0
    # Exporters that name tensors apart from nodes: the output tensor's name is the clue.
    fused = [{"name": "relu_out_nchwc", "op": "Conv", "us": 9.0}]
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="node_conv"),
                               helper.make_node("Relu", ["c"], ["relu_out"], name="node_relu")],
                              "g", [], [])
    assert charge_to_nodes(fused, name_owners(graph))[0] == {"node_relu": 9.0}


def test_a_compute_op_and_the_activations_fused_into_it_are_decided_together(cnn):
    from edgepack.compress.quantize.mixed_precision import fusion_groups

    group = fusion_groups(onnx.load(str(cnn)).graph)
    assert group == {"conv": "conv", "relu": "conv", "flatten": "flatten", "fc": "fc"}


def test_latency_aware_keeps_the_slower_nodes_in_float_and_says_why(tmp_path, cnn, cnn_x,
                                                                    monkeypatch):
    monkeypatch.setattr(MIXED, "_profile", fake_profiles(
        [{"name": "conv", "op": "FusedConv", "us": 100.0}, {"name": "fc", "op": "Gemm", "us": 10.0}],
        [{"name": "conv_token_1", "op": "QLinearConv", "us": 40.0},
         {"name": "fc_token_2", "op": "QGemm", "us": 30.0},
         {"name": "fc_output_DequantizeLinear", "op": "DequantizeLinear", "us": 5.0}]))
    result = quantize(cnn, cfg(latency_aware=True, min_cosine=0.95), tmp_path / "q.onnx",
                      calibration={"x": cnn_x})
    latency = result.record["latency_aware"]
    assert [row["node"] for row in latency["kept_float"]] == ["fc"]
    assert latency["kept_float"][0]["nodes"] == ["fc"] and latency["groups_quantized"] == 2
    assert "35 us per run quantized" in latency["kept_float"][0]["why"]
    assert latency["kept_float_by_op"] == {"Gemm": 1}
    ops = count_ops(result.artifact)
    assert ops.get("Gemm") == 1 and ops.get("QuantizeLinear", 0) >= 1


def test_when_no_node_is_faster_in_int8_the_model_is_refused(tmp_path, cnn, cnn_x, monkeypatch):
    monkeypatch.setattr(MIXED, "_profile", fake_profiles(
        [{"name": "conv", "op": "FusedConv", "us": 10.0}, {"name": "fc", "op": "Gemm", "us": 10.0}],
        [{"name": "conv_token_1", "op": "QLinearConv", "us": 40.0},
         {"name": "fc_token_2", "op": "QGemm", "us": 30.0}]))
    out = tmp_path / "q.onnx"
    with pytest.raises(SpeedCheckFailed, match="no node runs faster in int8 on this machine"):
        quantize(cnn, cfg(latency_aware=True, speed_check=True), out, calibration={"x": cnn_x})
    assert not out.exists()
    # With the speed check off (a pipeline judging speed itself) the full int8 model is kept.
    kept = quantize(cnn, cfg(latency_aware=True, min_cosine=0.95), out, calibration={"x": cnn_x})
    assert "caller's own speed judgement" in kept.record["latency_aware"]["note"]


# --------------------------------------------------------------------------- transformers


def test_static_on_a_transformer_quantizes_only_weight_matmuls(tmp_path):
    model = tiny_attention(tmp_path / "attn.onnx")
    result = quantize(model, cfg(), tmp_path / "q.onnx", calibration=token_data())
    graph = result.record["graph"]
    assert graph["transformer"] and graph["static_scope"]["weight_nodes"] == 4
    q = onnx.load(str(result.artifact)).graph
    made_by = {o: n.op_type for n in q.node for o in n.output}
    softmax = next(n for n in q.node if n.op_type == "Softmax")
    assert made_by[softmax.input[0]] == "Add", "the mask path and the scores stay float"
    quantized = {n.input[0] for n in q.node if n.op_type == "QuantizeLinear"}
    assert not quantized & {"probs", "masked", "bias3", "scores"}, "no 8-bit scores or softmax"
    assert {n.op_type for n in q.node if n.name in ("scores", "ctx")} == {"MatMul"}
    check = result.record["output_check"]
    assert check["passed"] and check["outputs"]["last_hidden_state"]["masked_padding"]


def test_static_slower_than_dynamic_on_a_transformer_is_refused_recommending_dynamic(
        tmp_path, monkeypatch, capsys):
    model = tiny_attention(tmp_path / "attn.onnx")
    np.savez(tmp_path / "calib.npz", **token_data())
    # fp32, static, dynamic: static beats fp32 but not dynamic.
    monkeypatch.setattr(SPEED, "time_models", fake_timings([10.0, 8.0, 5.0]))
    code = main(["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--mode", "static",
                 "--data", str(tmp_path / "calib.npz"), "--no-latency-aware"])
    err = capsys.readouterr().err
    assert code == 1 and "static int8 is slower than dynamic int8" in err
    assert "use --mode dynamic" in err and not (tmp_path / "q.onnx").exists()


def test_ort_transformer_fusions_run_before_quantizing_a_bert(tmp_path):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=32,
                                attn_implementation="eager")).eval()  # the pattern ORT fuses
    data = token_data(rows=24, seq=16, vocab=64)
    path = tmp_path / "bert.onnx"

    class ByKeyword(torch.nn.Module):  # BertModel's positional order changed in transformers 5
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state, out.pooler_output

    torch.onnx.export(ByKeyword().eval(), (torch.from_numpy(data["input_ids"][:1]),
                             torch.from_numpy(data["attention_mask"][:1])), str(path),
                      input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state", "pooler_output"],
                      dynamic_axes={n: {0: "b", 1: "s"} for n in ("input_ids", "attention_mask")},
                      opset_version=17, dynamo=False)
    result = quantize(path, cfg(mode="dynamic"), tmp_path / "q.onnx", calibration=data)
    fusions = result.record["graph"]["fusions"]
    assert fusions.get("Attention") == 1 and fusions.get("SkipLayerNormalization", 0) >= 1
    assert result.record["ops"].get("QAttention") == 1
    assert result.record["output_check"]["passed"]


def test_the_output_check_sees_a_change_of_scale(tmp_path):
    """Every output 0.65x the fp32 one has cosine 1.000: the norm ratio catches it."""
    from edgepack.compress.quantize.output_check import compare_models, failures, generated_batches
    from tests.bench.conftest import matmul_add

    model = matmul_add(tmp_path / "m.onnx")
    scaled = onnx.load(str(model))
    weight = onnx.numpy_helper.to_array(scaled.graph.initializer[0]) * 0.65
    bias = onnx.numpy_helper.to_array(scaled.graph.initializer[1]) * 0.65
    scaled.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(weight, "W"))
    scaled.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(bias, "B"))
    onnx.save(scaled, str(tmp_path / "scaled.onnx"))
    batches = generated_batches(model, 32)
    figures = compare_models(model, tmp_path / "scaled.onnx", batches)
    assert figures["y"]["mean_cosine"] > 0.9999
    assert abs(figures["y"]["norm_ratio"] - 0.65) < 1e-3
    assert failures(figures, 0.99, 0.9, None) == [
        "output 'y': outputs 0.650x the size of fp32's (the cosine does not see scale; at most "
        "20% change)"]


def test_fp16_keeps_weights_beyond_its_range_in_float32(tmp_path):
    """The float16 converter would clamp a weight of 1e5 to 65504 without a word."""
    from onnx import helper, numpy_helper

    from edgepack.compress.quantize.methods.fp16 import beyond_float16

    weight = numpy_helper.from_array(np.full((4, 2), 1e5, np.float32), "W")
    small = numpy_helper.from_array(np.ones((2, 2), np.float32), "V")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("MatMul", ["h", "V"],
                                                                         ["y"], name="second")],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 2])], [weight, small])
    kept = beyond_float16(helper.make_model(graph))
    assert len(kept) == 1 and kept[0].startswith("MatMul")
