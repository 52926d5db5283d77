"""A new quantize method and a new student init are each one new file: the examples in the
packages' docstrings, written as files of those packages, work end to end."""

from __future__ import annotations

import onnx
import pytest
import torch

from edgepack.compress.quantize.methods import METHODS
from edgepack.compress.student_inits import STUDENT_INITS
from tests.bench.conftest import matmul_add
from tests.edgepack.helpers import run_cli_output
from tests.registry_examples import ExampleFile, docstring_example

METHOD_HEADER = ("from dataclasses import dataclass\n\n"
                 "from edgepack.compress.quantize.methods import METHODS, MethodSpec\n"
                 "from edgepack.core.stage import option")
INIT_HEADER = ("import copy\nfrom dataclasses import dataclass\n\n"
               "from edgepack.compress.student_inits import STUDENT_INITS, InitSpec")
ALGORITHM_HEADER = ("from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS, "
                    "Int4Algorithm\n"
                    "from edgepack.compress.quantize.methods._weight_only import matmul_nbits")


@pytest.mark.parametrize("package", ["edgepack.compress.quantize.methods",
                                     "edgepack.compress.student_inits",
                                     "edgepack.compress.quantize.int4_algorithms"])
def test_the_package_example_is_about_ten_lines(package):
    import importlib

    code = docstring_example(importlib.import_module(package))
    assert 6 <= len([line for line in code.splitlines() if line.strip()]) <= 14


def test_a_new_quantize_method_is_one_file(tmp_path, capsys):
    model = matmul_add(tmp_path / "m.onnx")
    with ExampleFile(tmp_path, "edgepack.compress.quantize.methods", METHODS, "int8_per_tensor",
                     METHOD_HEADER) as example:
        assert example.added() == {"int8-per-tensor"}
        code, out, err = run_cli_output(capsys, "quantize", model, "-o", tmp_path / "q.onnx",
                                        "--mode", "int8-per-tensor", "--reduce-range",
                                        "--allow-slower")
    assert code == 0, err
    assert "wrote" in out and "int8-per-tensor (one scale per tensor)" in out
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear"}
    scales = [i for i in onnx.load(str(tmp_path / "q.onnx")).graph.initializer
              if i.name.endswith("_scale")]
    assert scales and all(len(s.dims) == 0 for s in scales)    # one scale per tensor
    assert "int8-per-tensor" not in METHODS.names()   # gone with its file


def test_a_new_int4_algorithm_is_one_file(tiny_decoder, tmp_path, capsys, monkeypatch):
    """The example algorithm works by its name everywhere the built-in ones do: the int4
    settings, the command line on a decoder and the decoder stage's grid, which lists the
    settings it refuses as not applicable."""
    from edgepack.compress.quantize.decoder_quantize_stage import (QuantizeDecoderConfig,
                                                                   candidate_grid)
    from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS
    from tests.decoder_timing import fake_search_timing

    _, source = tiny_decoder
    fake_search_timing(monkeypatch)
    out = tmp_path / "q" / "model.onnx"
    with ExampleFile(tmp_path, "edgepack.compress.quantize.int4_algorithms", INT4_ALGORITHMS,
                     "rtn_symmetric", ALGORITHM_HEADER) as example:
        assert example.added() == {"rtn-symmetric"}
        code, printed, err = run_cli_output(
            capsys, "quantize", source, "-o", out, "--mode", "int4", "--algorithm",
            "rtn-symmetric", "--symmetric", "--block-size", "32", "--no-search",
            "--max-perplexity-ratio", "2", "--min-top1-agreement", "0")
        grid, refused = candidate_grid(QuantizeDecoderConfig(
            algorithms=["rtn-symmetric"], block_sizes=[32], accuracy_levels=[4],
            int8_dynamic=False))
        with pytest.raises(ValueError, match="does not apply to algorithm 'rtn-symmetric'"):
            METHODS.get("int4").settings(algorithm="rtn-symmetric", symmetric=False)
    assert code == 0, err
    assert "rtn-symmetric, block size 32, symmetric" in printed
    nbits = [n for n in onnx.load(str(out)).graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all(len(n.input) == 3 for n in nbits)   # no zero points: symmetric
    assert [c.settings.symmetric for c in grid] == [True]
    assert [r["symmetric"] for r in refused] == [False]
    assert "rtn-symmetric" not in INT4_ALGORITHMS.names()   # gone with its file


def test_a_new_student_init_is_one_file(tmp_path):
    from edgepack.compress.distill import distill_config, make_student

    teacher = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with ExampleFile(tmp_path, "edgepack.compress.student_inits", STUDENT_INITS, "teacher_copy",
                     INIT_HEADER):
        config = distill_config(student_init="teacher-copy", trainable=False)
        student = make_student(teacher, config, None)
        assert config.to_dict()["trainable"] is False
    assert student is not teacher
    assert torch.equal(student[0].weight, teacher[0].weight)
    assert not any(p.requires_grad for p in student.parameters())


def test_an_unknown_choice_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown quantize method 'int8'.*dynamic, static"):
        METHODS.get("int8")
    with pytest.raises(ValueError, match=r"did you mean 'teacher-layers'"):
        STUDENT_INITS.get("teacher-layer")


def test_no_method_falls_through_to_another(tmp_path):
    """The old backend ran int4 for any mode it did not know; now an unknown method is an
    error, and each method has a function of its own."""
    from edgepack.compress.quantize import quantize_into

    with pytest.raises(ValueError, match="unknown quantize method 'int5'"):
        quantize_into(tmp_path / "p.onnx", tmp_path / "q.onnx", "int5", None)
    assert not (tmp_path / "q.onnx").exists()
    functions = {spec.quantize for spec in METHODS.specs()}
    assert METHODS.names() == ("dynamic", "static", "fp16", "int4")
    assert len(functions) == len(METHODS.names())
