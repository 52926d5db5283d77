"""Checking ONNX files before ONNX Runtime sees them (the happy paths and the limits;
hostile files are in test_footguns.py)."""

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgepack.core.onnx_files import (check_onnx_file, external_tensor_names, load_onnx_header,
                                      model_size_bytes, parameter_count, resolve_inside)
from tests.export.tiny import add_model, run_onnx


def test_inline_model_passes_and_runs(tmp_path):
    path = tmp_path / "add.onnx"
    onnx.save(add_model(), str(path))
    graph = check_onnx_file(path)
    assert external_tensor_names(graph) == []
    assert model_size_bytes(path) == path.stat().st_size
    x = np.ones(4, np.float32)
    np.testing.assert_array_equal(run_onnx(path, x)[0], x + np.arange(4))


def test_external_data_inside_the_folder_passes_and_counts(tmp_path):
    weight = np.array([5, 6, 7, 8], np.float32)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(b"\0" * 8 + weight.tobytes())
    path = tmp_path / "add.onnx"
    onnx.save(add_model(weight, location="sub/w.bin", offset=8), str(path))
    graph = check_onnx_file(path)
    assert external_tensor_names(graph) == ["w"]
    assert model_size_bytes(path) == path.stat().st_size + 24
    np.testing.assert_array_equal(run_onnx(path, np.zeros(4, np.float32))[0], weight)


def test_missing_data_file_is_named(tmp_path):
    path = tmp_path / "add.onnx"
    onnx.save(add_model(location="gone.bin"), str(path))
    with pytest.raises(ValueError, match="'gone.bin' of tensor 'w' is missing"):
        check_onnx_file(path)


def test_graph_with_an_input_without_type_fails_the_checker(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "untyped",
        [helper.make_value_info("x", onnx.TypeProto())],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    path = tmp_path / "untyped.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(ValueError, match="fails the ONNX checker"):
        check_onnx_file(path)


@pytest.mark.parametrize("make, error, expected", [
    (lambda p: None, FileNotFoundError, "does not exist"),
    (lambda p: p.mkdir(), ValueError, "is not a file"),
    (lambda p: p.write_bytes(b""), ValueError, "is empty"),
])
def test_not_a_model_file(tmp_path, make, error, expected):
    path = tmp_path / "model.onnx"
    make(path)
    with pytest.raises(error, match=expected):
        load_onnx_header(path)


def test_parameter_count_skips_shape_constants():
    model = add_model()
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 4], np.int64), "shape"))
    assert parameter_count(model) == 4


SAFE_NAME = st.text(alphabet="abcxyz019_-", min_size=1, max_size=8)


@settings(max_examples=50, deadline=None)
@given(st.lists(SAFE_NAME, min_size=1, max_size=4))
def test_relative_paths_of_plain_names_resolve_inside(tmp_path_factory, parts):
    base = tmp_path_factory.mktemp("base")
    resolved = resolve_inside(base, "/".join(parts))
    assert base.resolve() in resolved.parents


@settings(max_examples=50, deadline=None)
@given(st.lists(SAFE_NAME, max_size=3), st.integers(min_value=1, max_value=4))
def test_climbing_above_the_folder_is_refused(tmp_path_factory, parts, extra_ups):
    base = tmp_path_factory.mktemp("base") / "model"
    base.mkdir()
    # go down len(parts) levels, then up one more than that (and more): always outside
    location = "/".join(parts + [".."] * (len(parts) + extra_ups) + ["x"])
    with pytest.raises(ValueError, match="outside the model's folder"):
        resolve_inside(base, location)
