"""Generated and user-given inputs: shapes, dtypes, token ranges, and errors by name."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgepack.bench.inputs import (TOKEN_VOCAB, batches, check_feeds, generate_inputs,
                                   parse_shape_overrides, timing_feeds, token_vocab_sizes)
from tests.bench.conftest import matmul_add, token_model


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_shape_overrides_parse():
    assert parse_shape_overrides(["input_ids=1,128", "x=2"]) == {"input_ids": [1, 128], "x": [2]}


@pytest.mark.parametrize("item", ["input_ids", "=1,2", "x=1,a", "x=0,3", "x="])
def test_bad_shape_override_names_the_format(item):
    with pytest.raises(ValueError, match="expected NAME=D1,D2"):
        parse_shape_overrides([item])


def test_token_ids_stay_inside_the_models_vocabulary(tmp_path):
    path = token_model(tmp_path / "tok.onnx", vocab=50)
    session = _session(path)
    sizes = token_vocab_sizes(onnx.load(str(path)))
    assert sizes == {"input_ids": 50}
    feeds = generate_inputs(session, batch=2, vocab_sizes=sizes)
    assert feeds["input_ids"].dtype == np.int64 and feeds["input_ids"].shape == (2, 128)
    assert feeds["input_ids"].max() < 50 and feeds["input_ids"].min() >= 0
    assert (feeds["attention_mask"] == 1).all()
    session.run(None, feeds)  # no index error


def test_a_quantized_embedding_table_still_bounds_the_token_ids(tmp_path):
    """Quantized, the Gather reads the table through a DequantizeLinear node."""
    model = onnx.load(str(token_model(tmp_path / "tok.onnx", vocab=50)))
    table = next(t for t in model.graph.initializer if t.name == "E")
    table.CopyFrom(onnx.numpy_helper.from_array(np.zeros((50, 8), np.int8), "E_q"))
    model.graph.initializer.extend([onnx.numpy_helper.from_array(np.float32(0.1), "s")])
    model.graph.node.insert(0, onnx.helper.make_node("DequantizeLinear", ["E_q", "s"], ["E"]))
    assert token_vocab_sizes(model) == {"input_ids": 50}


def test_a_fused_bert_embedding_still_bounds_the_token_ids(tmp_path):
    """After ORT's transformer fusion the table is read by EmbedLayerNormalization."""
    model = onnx.load(str(token_model(tmp_path / "tok.onnx", vocab=50)))
    gather = next(n for n in model.graph.node if n.op_type == "Gather")
    model.graph.node.remove(gather)
    model.graph.node.insert(0, onnx.helper.make_node(
        "EmbedLayerNormalization", ["input_ids", "", "E", "P", "", "g", "b"], ["emb"],
        domain="com.microsoft"))
    assert token_vocab_sizes(model) == {"input_ids": 50}


def test_unknown_vocabulary_uses_the_small_default_range(tmp_path):
    session = _session(token_model(tmp_path / "tok.onnx", vocab=5000))
    feeds = generate_inputs(session, overrides={"input_ids": [1, 16],
                                                "attention_mask": [1, 16]})
    assert feeds["input_ids"].shape == (1, 16)
    assert feeds["input_ids"].max() < TOKEN_VOCAB


@pytest.mark.parametrize("overrides, batch, message", [
    ({"input_ids": [1, 2, 3]}, 1, "has rank 3"),
    ({"input_ids": [4, 16]}, 1, "sets batch 4 but the batch is 1"),
    ({"input_idz": [1, 16]}, 1, "did you mean 'input_ids'"),
])
def test_shape_overrides_that_do_not_fit(tmp_path, overrides, batch, message):
    session = _session(token_model(tmp_path / "tok.onnx"))
    with pytest.raises(ValueError, match=message):
        generate_inputs(session, batch, overrides)


def test_override_of_a_fixed_dimension_must_match(tmp_path):
    session = _session(matmul_add(tmp_path / "mm.onnx"))
    with pytest.raises(ValueError, match="does not fit the declared shape"):
        generate_inputs(session, 1, {"x": [1, 17]})


def test_fixed_batch_dimension_refuses_another_batch(tmp_path):
    session = _session(matmul_add(tmp_path / "mm.onnx", batch=1))
    with pytest.raises(ValueError, match="fixed batch dimension 1"):
        generate_inputs(session, batch=4)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 16), np.float64)}, "dtype float64; expected float32"),
    ({"x": np.zeros((3, 4, 16), np.float32)}, "expected rank 2"),
    ({"x": np.zeros((3, 15), np.float32)}, "has shape \\[3, 15\\]"),
    ({"y": np.zeros((3, 16), np.float32)}, "'y' is not an input"),
    ({}, "no array for model input 'x'"),
    ({"x": np.zeros((0, 16), np.float32)}, "no rows"),
    ({"x": np.zeros((3, 16), np.float32), "labels": np.zeros(2, np.int64)}, "expected 3 rows"),
    ({"x": np.zeros((3, 16), np.float32), "labels": np.zeros(3, np.float32)}, "integer class"),
])
def test_bad_data_names_the_input_and_what_was_expected(tmp_path, arrays, message):
    session = _session(matmul_add(tmp_path / "mm.onnx"))
    with pytest.raises(ValueError, match=message):
        check_feeds(session, arrays, "data file eval.npz")


def test_batches_pad_the_last_batch_only_for_a_fixed_batch():
    feeds = {"x": np.arange(5)[:, None]}
    free = [(a, b, c["x"].shape[0]) for a, b, c in batches(feeds, 2)]
    assert free == [(0, 2, 2), (2, 4, 2), (4, 5, 1)]
    padded = list(batches(feeds, 2, fixed=True))
    assert padded[-1][2]["x"].ravel().tolist() == [4, 4]


def test_timing_feeds_repeat_rows_up_to_the_batch():
    feeds = timing_feeds({"x": np.arange(3)[:, None]}, 5)
    assert feeds["x"].ravel().tolist() == [0, 1, 2, 0, 1]
