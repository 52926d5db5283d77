"""int4 blocks with float offsets on the symmetric kernel: exact on a min/max grid, and the
ONNX graph computes what the arrays say."""

import numpy as np
import onnx
import pytest
from edgepack.compress.quantize.methods._block_offset import (
    dequantize,
    offset_blocks,
    quantize_offset_int4,
)
from onnx import TensorProto, helper, numpy_helper

from tests.compress.one_matmul import one_matmul


def _q4_1_weight(k, n, block, seed=0):
    """A weight already on llama.cpp's Q4_1 grid: per block of K, minimum + step * level."""
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 16, size=(n, k // block, block))
    levels[..., 0], levels[..., 1] = 0, 15     # every block spans its whole grid
    step = rng.uniform(0.01, 0.05, size=(n, k // block, 1))
    low = rng.normal(0, 0.1, size=(n, k // block, 1))
    return (low + step * levels).reshape(n, k).T.astype(np.float32)


def test_a_q4_1_grid_is_reproduced_exactly():
    weight = _q4_1_weight(64, 8, 32)
    packed, scales, offsets = offset_blocks(weight, 32)
    assert packed.shape == (8, 2, 16) and scales.shape == (16,) and offsets.shape == (2, 8)
    assert np.abs(dequantize(packed, scales, offsets) - weight).max() < 1e-6


def test_any_weight_is_within_half_a_step():
    weight = np.random.default_rng(1).normal(size=(128, 12)).astype(np.float32)
    packed, scales, offsets = offset_blocks(weight, 32)
    error = np.abs(dequantize(packed, scales, offsets) - weight)
    steps = np.repeat(scales.reshape(12, 4), 32, axis=1).T
    assert (error <= steps / 2 + 1e-6).all()


@pytest.mark.parametrize("accuracy_level", [0, 4])
def test_the_graph_computes_the_dequantized_weight(accuracy_level):
    import onnxruntime as ort

    weight = _q4_1_weight(96, 16, 32, seed=2)
    model = one_matmul(96, 16, weight)
    result = quantize_offset_int4(model, 32, accuracy_level)
    assert result.quantized == ["proj"] and not result.skipped
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Reshape", "ReduceSum", "MatMulNBits", "MatMul", "Add"]
    assert "w" not in {i.name for i in model.graph.initializer}
    onnx.checker.check_model(model)
    x = np.random.default_rng(3).normal(size=(1, 3, 96)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    expected = x @ weight
    # level 4 quantizes the activations to int8 blocks: a looser bound, still far below
    # what a wrong offset or block order would give (errors of order |x| * |w| * K).
    tolerance = 1e-4 if accuracy_level == 0 else 0.05 * np.abs(expected).max()
    assert np.abs(got - expected).max() < tolerance


def test_matmuls_reading_one_input_share_its_block_sums():
    """An MLP's gate and up projections read the same input: one Reshape + ReduceSum for
    both, and each output is still its own weight's product."""
    import onnxruntime as ort

    gate, up = _q4_1_weight(64, 8, 32, seed=5), _q4_1_weight(64, 12, 32, seed=6)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, n])
               for name, n in (("g", 8), ("u", 12))]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "wg"], ["g"], name="gate"),
                               helper.make_node("MatMul", ["x", "wu"], ["u"], name="up")],
                              "g", [x], outputs, [numpy_helper.from_array(gate, "wg"),
                                                  numpy_helper.from_array(up, "wu")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert quantize_offset_int4(model, 32).quantized == ["gate", "up"]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("ReduceSum") == 1 and ops.count("MatMulNBits") == 2
    onnx.checker.check_model(model)
    feed = np.random.default_rng(7).normal(size=(1, 3, 64)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got_gate, got_up = session.run(None, {"x": feed})
    assert np.abs(got_gate - feed @ gate).max() < 1e-4
    assert np.abs(got_up - feed @ up).max() < 1e-4


@pytest.mark.parametrize("accuracy_level", [0, 4])
def test_a_partial_last_block_is_padded_as_matmulnbits_allows(accuracy_level):
    """K = 80 in blocks of 32: two whole blocks and one of 16. The weight's padding repeats
    its last row (the block's range stays its own), the input's is zeros (a Pad before the
    block sums), and the graph computes the dequantized weight."""
    import onnxruntime as ort

    weight = np.random.default_rng(5).normal(size=(80, 8)).astype(np.float32)
    model = one_matmul(80, 8, weight)
    result = quantize_offset_int4(model, 32, accuracy_level)
    assert result.quantized == ["proj"] and not result.skipped
    assert [n.op_type for n in model.graph.node] == ["Pad", "Reshape", "ReduceSum",
                                                     "MatMulNBits", "MatMul", "Add"]
    onnx.checker.check_model(model)
    packed, scales, offsets = offset_blocks(weight, 32)
    assert packed.shape == (8, 3, 16) and offsets.shape == (3, 8)
    fitted = dequantize(packed, scales, offsets, k=80)
    steps = np.repeat(scales.reshape(8, 3), 32, axis=1).T[:80]
    assert (np.abs(fitted - weight) <= steps / 2 + 1e-6).all()   # the padding took no range
    x = np.random.default_rng(6).normal(size=(1, 3, 80)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got, expected = session.run(None, {"x": x})[0], x @ fitted
    tolerance = 1e-4 if accuracy_level == 0 else 0.05 * np.abs(expected).max()
    assert np.abs(got - expected).max() < tolerance


def _int4(model_path, out, **settings):
    from edgepack.compress.quantize.methods import METHODS, quantize_into

    spec = METHODS.get("int4")
    quantize_into(model_path, out, "int4", spec.settings(**settings))
    return onnx.load(str(out))


def _snap_to_gguf_grids(model):
    """Put a tiny decoder's weights where a Q4_1 GGUF leaves them: every Linear on 16-level
    min/max blocks of 32 inputs, the (tied) embedding on symmetric 8-bit blocks of 32."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight is not \
                    model.get_input_embeddings().weight:
                w = module.weight.view(module.out_features, -1, 32)
                low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
                step = ((high - low) / 15).clamp_min(1e-8)
                w.copy_(low + step * torch.round((w - low) / step))
        e = model.get_input_embeddings().weight.view(model.config.vocab_size, -1, 32)
        d = (e.abs().amax(-1, keepdim=True) / 127).clamp_min(1e-8)  # the pad row is 0
        e.copy_(d * torch.round(e / d))
    return model


@pytest.fixture(scope="module", params=["traced", "fused"])
def gridded_decoder(request, tmp_path_factory):
    """The gridded tiny decoder, exported as each decoder graph (the fused one packs Q, K
    and V into one MatMul: its blocks run along the same input axis)."""
    pytest.importorskip("optimum.exporters.onnx")
    from edgepack.export.hf import DECODER_TASK, export_hf

    from tests.tiny_decoder import make_tiny_decoder_folder

    root = tmp_path_factory.mktemp("gridded")
    folder = make_tiny_decoder_folder(root / "hf")
    from transformers import AutoModelForCausalLM

    model = _snap_to_gguf_grids(AutoModelForCausalLM.from_pretrained(str(folder)))
    model.save_pretrained(str(folder))
    return export_hf(folder, DECODER_TASK, root / "onnx", graph=request.param).artifact


def _quality(reference_path, path):
    from edgepack.bench.decoder import Decoder
    from edgepack.bench.lm_quality import lm_quality, lm_reference

    windows = [[5, 17, 40, 99, 3, 120, 7, 64, 201, 33, 18, 250, 90, 41, 12, 77]]
    prompts = [[5, 17, 40], [99, 3]]
    reference = lm_reference(Decoder(reference_path), windows, prompts, 6)
    return lm_quality(Decoder(path), windows, prompts, reference, 6)


def test_the_offset_method_reproduces_a_gguf_grid(gridded_decoder, tmp_path):
    model = _int4(gridded_decoder, tmp_path / "q.onnx", algorithm="offset", block_size=32,
                  accuracy_level=0, embedding_bits=8)
    ops = {}
    for node in model.graph.node:
        ops.setdefault(node.op_type, []).append(node)
    bits = sorted({a.i for n in ops["MatMulNBits"] for a in n.attribute if a.name == "bits"})
    assert bits == [4, 8]                          # layers in 4, the lm_head in 8
    (gather,) = ops["GatherBlockQuantized"]
    assert {a.name: a.i for a in gather.attribute}["bits"] == 8
    quality = _quality(gridded_decoder, tmp_path / "q.onnx")
    assert quality.perplexity_ratio == pytest.approx(1.0, abs=2e-3)
    assert quality.top1_agreement == 1.0 and quality.greedy_agreement == 1.0
    # Integer zero points cannot hold those grids: round to nearest asymmetric loses.
    rtn = _int4(gridded_decoder, tmp_path / "rtn.onnx", algorithm="rtn", block_size=32,
                accuracy_level=0, embedding_bits=8)
    assert rtn is not None
    assert abs(_quality(gridded_decoder, tmp_path / "rtn.onnx").perplexity_ratio - 1) > \
        abs(quality.perplexity_ratio - 1)


def test_kquant_keeps_a_gguf_grid_and_its_symmetric_blocks_need_no_correction(
        gridded_decoder, tmp_path):
    """k-quant's search has the min/max grid among its candidates: on a gridded model it is
    exact, as offset is. Its symmetric blocks are plain MatMulNBits: no offset, no
    correction node."""
    kquant = _int4(gridded_decoder, tmp_path / "k.onnx", algorithm="kquant", block_size=32,
                   accuracy_level=0, embedding_bits=8)
    assert any(n.name.endswith("_int4_offset_add") for n in kquant.graph.node)
    quality = _quality(gridded_decoder, tmp_path / "k.onnx")
    assert quality.perplexity_ratio == pytest.approx(1.0, abs=2e-3)
    assert quality.top1_agreement == 1.0
    symmetric = _int4(gridded_decoder, tmp_path / "ks.onnx", algorithm="kquant",
                      symmetric=True, block_size=32, accuracy_level=4)
    names = [n.name for n in symmetric.graph.node]
    assert not any(name.endswith(("_int4_offset_add", "_int4_offset_blocksum"))
                   for name in names)
    layers = [n for n in symmetric.graph.node if n.op_type == "MatMulNBits"
              and n.name.endswith("_int4_offset_matmul")]
    assert layers and all(len(n.input) == 3 for n in layers)      # no zero points: symmetric
    assert {a.i for n in layers for a in n.attribute if a.name == "accuracy_level"} == {4}


def test_offset_refuses_symmetric_blocks():
    from edgepack.compress.quantize.methods import METHODS

    with pytest.raises(ValueError, match="takes symmetric=False and bits=4"):
        METHODS.get("int4").settings(algorithm="offset", symmetric=True)
    with pytest.raises(ValueError, match="embedding_bits=3 is not valid"):
        METHODS.get("int4").settings(embedding_bits=3)


def test_a_tie_optimum_left_as_two_copies_is_found():
    from edgepack.compress.quantize.methods._tied_embedding import untie_lm_head

    table = np.random.default_rng(4).normal(size=(10, 4)).astype(np.float32)
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 10])
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["h"], name="embed"),
             helper.make_node("MatMul", ["h", "head_w"], ["logits"], name="lm_head")]
    graph = helper.make_graph(nodes, "g", [ids], [logits],
                              [numpy_helper.from_array(table, "emb"),
                               numpy_helper.from_array(table.T.copy(), "head_w")])
    head = untie_lm_head(helper.make_model(graph))
    assert (head.embedding, head.lm_head_weight, head.lm_head_node) == ("emb", "head_w",
                                                                        "lm_head")
    graph.initializer[1].CopyFrom(numpy_helper.from_array(table.T + 1, "head_w"))
    assert untie_lm_head(helper.make_model(graph)) is None   # not the same matrix: not tied
