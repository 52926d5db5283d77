"""int4 weight-only on a tiny Llama decoder (tied embedding): the three algorithms, the tied
embedding / lm_head, the accuracy level, GPTQ's calibration, and bad settings."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgepack.compress.quantize import quantize_config
from edgepack.compress.quantize.methods import quantize_into
from edgepack.compress.quantize.methods._weight_only import decoder_feeds
from edgepack.compress.quantize.methods.int4 import Int4WeightOnly

pytest.importorskip("onnxruntime")


def _windows(seed: int, count: int = 2, length: int = 24) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(3, 300, size=(count, length)).tolist()


def _quantize(source, target, feeds=(), **settings):
    quantize_into(source, target, "int4", Int4WeightOnly(**settings), feeds)
    return onnx.load(str(target))


def _ops(model) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def _feeds(onnx_path, seed=0):
    return decoder_feeds(onnx.load(str(onnx_path), load_external_data=False), _windows(seed))


@pytest.mark.parametrize("algorithm", ["rtn", "hqq", "gptq"])
def test_each_algorithm_makes_matmulnbits_and_a_smaller_file(tiny_decoder, tmp_path, algorithm):
    _, source = tiny_decoder
    feeds = _feeds(source) if algorithm == "gptq" else ()
    target = tmp_path / f"{algorithm}.onnx"
    model = _quantize(source, target, feeds, algorithm=algorithm, block_size=32)
    ops = _ops(model)
    assert ops["MatMulNBits"] == 15   # 2 layers x 7 projections, and the lm_head
    assert target.stat().st_size < 0.5 * source.stat().st_size


def test_the_tied_embedding_and_lm_head_are_int4_and_share_one_copy(tiny_decoder, tmp_path):
    _, source = tiny_decoder
    with_embedding = _quantize(source, tmp_path / "e.onnx", block_size=32)
    without = _quantize(source, tmp_path / "f.onnx", block_size=32, quantize_embedding=False)
    assert _ops(with_embedding)["GatherBlockQuantized"] == 1
    assert _ops(without)["GatherBlockQuantized"] == 0 and _ops(without)["MatMulNBits"] == 14
    names = {init.name for init in with_embedding.graph.initializer}
    assert "model.embed_tokens.weight" not in names      # no float copy left
    gather = next(n for n in with_embedding.graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in with_embedding.graph.node
                if n.op_type == "MatMulNBits" and "lm_head" in n.input[1])
    assert gather.input[0].startswith(head.input[1])    # a Reshape of the lm_head's blocks
    vocab, hidden = 320, 64   # the float matrix is 4 bytes a weight; int4 half a byte
    saved = (tmp_path / "f.onnx").stat().st_size - (tmp_path / "e.onnx").stat().st_size
    assert saved > 0.8 * vocab * hidden * 4 - vocab * hidden


def _embedding_rows(path, ids):
    """The embedding output of the model at ``path`` for ``ids`` (a graph output added)."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    gather = next(n for n in model.graph.node if n.op_type in ("Gather", "GatherBlockQuantized")
                  and "embed_tokens" in n.name)
    model.graph.output.append(onnx.helper.make_tensor_value_info(
        gather.output[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = decoder_feeds(model, [ids])[0]
    return session.run([gather.output[0]], feeds)[0][0]


@pytest.mark.parametrize("algorithm,symmetric,bits", [("rtn", True, 4), ("rtn", False, 4),
                                                      ("hqq", False, 4), ("rtn", False, 8)])
def test_the_int4_embedding_gathers_the_right_rows(tiny_decoder, tmp_path, algorithm, symmetric,
                                                   bits):
    """Shared with the lm_head (rtn) or its own copy (hqq's float zero points): every row
    comes back within rounding of the float embedding (8-bit blocks: 16x finer)."""
    _, source = tiny_decoder
    target = tmp_path / "q.onnx"
    _quantize(source, target, algorithm=algorithm, block_size=32, symmetric=symmetric,
              bits=bits)
    embedding = next(numpy_helper.to_array(i) for i in onnx.load(str(source)).graph.initializer
                     if i.name == "model.embed_tokens.weight")
    ids = [5, 17, 299, 3]
    rows = _embedding_rows(target, ids)
    own_8bit = algorithm == "hqq"   # HQQ's float zero points: the embedding's own 8-bit copy
    gather = next(n for n in onnx.load(str(target)).graph.node
                  if n.op_type == "GatherBlockQuantized")
    assert next(a.i for a in gather.attribute if a.name == "bits") == (8 if own_8bit else bits)
    step = np.abs(embedding[ids]).max() / (127 if bits == 8 or own_8bit else 7)
    assert rows.shape == embedding[ids].shape
    assert np.abs(rows - embedding[ids]).max() <= step


def test_an_embedding_narrower_than_a_block_gets_blocks_that_divide_it(tiny_decoder, tmp_path):
    _, source = tiny_decoder   # hidden 64 < block 128: GatherBlockQuantized cannot pad a row
    target = tmp_path / "q.onnx"
    model = _quantize(source, target, block_size=128)
    gather = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    assert next(a.i for a in gather.attribute if a.name == "block_size") == 64
    assert _ops(model)["MatMulNBits"] == 15
    assert "model.embed_tokens.weight" not in {i.name for i in model.graph.initializer}


@pytest.mark.parametrize("level", [0, 4])
def test_the_accuracy_level_is_set_on_every_matmulnbits(tiny_decoder, tmp_path, level):
    _, source = tiny_decoder
    model = _quantize(source, tmp_path / "q.onnx", block_size=32, accuracy_level=level)
    found = [[a.i for a in n.attribute if a.name == "accuracy_level"]
             for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert found == [[level] if level else []] * 15


def test_gptq_calibrates_on_the_windows_it_is_given(tiny_decoder, tmp_path, monkeypatch):
    """The windows reach GPTQ: the Hessian of each MatMul's inputs is built from them."""
    import onnxruntime.quantization.neural_compressor.weight_only as weight_only

    hessians: list[list[np.ndarray]] = [[], []]
    original = weight_only.gptq
    _, source = tiny_decoder
    for seed in (0, 1):
        def spy(W, H, seed=seed, **kwargs):  # noqa: N803 (ONNX Runtime's names)
            hessians[seed].append(H.copy())
            return original(W, H, **kwargs)

        monkeypatch.setattr(weight_only, "gptq", spy)
        model = _quantize(source, tmp_path / f"{seed}.onnx", _feeds(source, seed),
                          algorithm="gptq", block_size=32, symmetric=True)
        assert _ops(model)["MatMulNBits"] == 15
    assert len(hessians[0]) == len(hessians[1]) == 15
    assert not np.allclose(hessians[0][0], hessians[1][0])
    with pytest.raises(ValueError, match="gptq' needs calibration inputs"):
        _quantize(source, tmp_path / "c.onnx", algorithm="gptq")


def test_footgun_onnxruntime_gptq_ignores_its_hessian():
    """ONNX Runtime 1.32's GPTQ (its neural-compressor port) reads the inverse Hessian's
    upper Cholesky factor by column, below the diagonal, where it is zero: no rounding error
    is spread, and the result is the same for any calibration data. Pinned here so the day
    it is fixed, this test says so (docs/llm.md reports GPTQ's figures with this caveat)."""
    from onnxruntime.quantization.neural_compressor.weight_only import gptq

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(64, 32)).astype(np.float32)
    inputs = rng.normal(size=(256, 64))
    inputs[:, 1] = 0.9 * inputs[:, 0] + 0.1 * inputs[:, 1]   # correlated input channels
    calibrated = gptq(weight.copy(), inputs.T @ inputs, scheme="sym", group_size=32)
    uninformed = gptq(weight.copy(), np.eye(64), scheme="sym", group_size=32)
    assert np.array_equal(calibrated, uninformed)


def test_gptq_asymmetric_with_an_odd_block_count_is_refused_in_one_line(tiny_decoder, tmp_path):
    _, source = tiny_decoder   # K=64 at block 128: one block per column
    with pytest.raises(ValueError, match="even number of blocks per column") as caught:
        _quantize(source, tmp_path / "q.onnx", _feeds(source), algorithm="gptq",
                  block_size=128)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("settings,message", [
    ({"block_size": 48}, r"power of two >= 16 \(e\.g\. 16, 32, 64, 128, 256\), got 48"),
    ({"accuracy_level": 3}, r"accuracy_level=3 is not valid; expected one of 0, 1, 2, 4"),
    ({"algorithm": "awq"}, r"algorithm='awq' is not valid; expected one of 'rtn', 'hqq', "
                           r"'gptq'"),
    ({"algorithm": "hqq", "symmetric": True}, r"does not apply to algorithm 'hqq'"),
    ({"bits": 3}, r"bits=3 is not valid; expected one of 4, 8"),
    ({"bits": 8, "algorithm": "gptq"}, r"bits=8 needs algorithm 'rtn'"),
])
def test_bad_int4_settings_are_one_line_errors(settings, message):
    with pytest.raises(ValueError, match=message) as caught:
        quantize_config("int4", **settings)
    assert "\n" not in str(caught.value)


def test_the_command_line_has_a_flag_per_int4_field():
    import argparse

    from edgepack.cli import quantize_cmd

    parser = argparse.ArgumentParser()
    quantize_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["quantize", "m.onnx", "-o", "q.onnx", "--mode", "int4",
                              "--algorithm", "hqq", "--accuracy-level", "4",
                              "--no-quantize-embedding", "--block-size", "32"])
    settings = quantize_cmd.config_from_args(args).settings
    assert (settings.algorithm, settings.accuracy_level, settings.quantize_embedding,
            settings.block_size) == ("hqq", 4, False, 32)


@pytest.mark.parametrize("symmetric", [False, True])
def test_gptq_leaves_the_lm_head_to_its_own_8_bit_blocks(tiny_decoder, tmp_path, symmetric,
                                                        capfd):
    """ONNX Runtime's GPTQ ignores nodes_to_exclude: the lm_head, meant for 8-bit blocks with
    the embedding that shares its bytes, came out in GPTQ's 4 bits, and the embedding's
    Gather read them as 8-bit (a model ONNX Runtime refused, or read wrong)."""
    import onnxruntime as ort

    _, source = tiny_decoder
    target = tmp_path / "g.onnx"
    model = _quantize(source, target, _feeds(source), algorithm="gptq", block_size=32,
                      symmetric=symmetric, embedding_bits=8)
    bits = {n.input[1]: {a.name: a.i for a in n.attribute}["bits"]
            for n in model.graph.node if n.op_type == "MatMulNBits"}
    heads = [name for name in bits if "lm_head" in name]
    assert len(heads) == 1 and bits[heads[0]] == 8
    assert sorted(set(bits.values())) == [4, 8] and list(bits.values()).count(8) == 1
    gather = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    assert {a.name: a.i for a in gather.attribute}["bits"] == 8
    assert not any(n.op_type == "Identity" and "kept_float" in n.output[0]
                   for n in model.graph.node)
    ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert "Progress:" not in capfd.readouterr().out   # its progress bar stays quiet


def test_a_method_that_writes_a_graph_onnx_runtime_refuses_is_a_bug(tiny_decoder, tmp_path,
                                                                    monkeypatch):
    """Exit 3, not 2: the file is edgepack's own output, not the user's input."""
    from edgepack.compress.quantize import methods

    def broken(prepared, target, settings, job):
        model = onnx.load(str(prepared))
        gather = next(n for n in model.graph.node if n.op_type == "Gather")
        gather.op_type, gather.domain = "GatherBlockQuantized", "com.microsoft"
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
        onnx.save(model, str(target))

    spec = methods.METHODS.get("int4")
    monkeypatch.setitem(methods.METHODS._specs, "int4", dataclasses.replace(spec, quantize=broken))
    _, source = tiny_decoder
    with pytest.raises(RuntimeError, match="quantize method 'int4' wrote a graph that is not "
                                           "valid ONNX .*ONNX Runtime cannot load it"):
        quantize_into(source, tmp_path / "b.onnx", "int4", Int4WeightOnly(block_size=32))
