"""The lm_head and the embedding as roles with overrides: what each int4 setting gives
them, the user's embedding_bits before an algorithm's own choice."""

from __future__ import annotations

import pytest

from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS
from edgepack.compress.quantize.methods.int4 import Int4WeightOnly
from edgepack.compress.quantize.methods._weight_roles import Blocks, RoleOverride, role_blocks


def _roles(**settings) -> dict:
    settings = Int4WeightOnly(**settings)
    blocks = role_blocks(settings, INT4_ALGORITHMS.get(settings.algorithm).overrides)
    return {role: (b.algorithm, b.bits, b.symmetric) for role, b in blocks.items()}


@pytest.mark.parametrize("settings, lm_head, embedding", [
    ({}, ("rtn", 4, False), ("rtn", 4, False)),                      # as the layers
    ({"symmetric": True, "embedding_bits": 8}, ("rtn", 8, True), ("rtn", 8, True)),
    ({"bits": 8, "embedding_bits": 4}, ("rtn", 4, False), ("rtn", 4, False)),
    ({"bits": 8, "embedding_bits": 8}, ("rtn", 8, False), ("rtn", 8, False)),
    ({"algorithm": "hqq"}, ("hqq", 4, False), ("rtn", 8, False)),    # its own 8-bit copy
    ({"algorithm": "hqq", "embedding_bits": 8}, ("rtn", 8, True), ("rtn", 8, True)),
    ({"algorithm": "offset"}, ("rtn", 4, False), ("rtn", 4, False)),  # a head of its own
    ({"algorithm": "offset", "embedding_bits": 8}, ("rtn", 8, True), ("rtn", 8, True)),
    ({"algorithm": "gptq", "embedding_bits": 8}, ("rtn", 8, True), ("rtn", 8, True)),
    ({"algorithm": "kquant", "symmetric": True}, ("rtn", 4, True), ("rtn", 4, True)),
    ({"algorithm": "kquant", "embedding_bits": 8}, ("rtn", 8, True), ("rtn", 8, True)),
])
def test_each_role_gets_its_blocks(settings, lm_head, embedding):
    roles = _roles(**settings)
    assert (roles["lm_head"], roles["embedding"]) == (lm_head, embedding)


def test_an_embedding_left_in_float_has_no_roles():
    assert set(_roles(quantize_embedding=False)) == {"layers"}


def test_the_first_override_wins_and_the_rest_is_inherited():
    class Settings:
        algorithm, bits, symmetric, embedding_bits, quantize_embedding = "x", 4, True, 0, True

    blocks = role_blocks(Settings(), (RoleOverride(("embedding",), bits=8),
                                      RoleOverride(("lm_head", "embedding"), bits=2,
                                                   algorithm="y")))
    assert blocks["lm_head"] == Blocks("y", 2, True)
    assert blocks["embedding"] == Blocks("y", 8, True)


def test_an_override_names_a_known_role():
    with pytest.raises(ValueError, match="matches the roles lm_head, embedding; got 'head'"):
        RoleOverride(("head",), bits=8)


def test_an_algorithm_states_its_own_block_sizes_within_the_one_rule():
    from edgepack.compress.quantize.int4_algorithms import Int4Algorithm

    INT4_ALGORITHMS.register(Int4Algorithm("blocks-of-32", lambda model, job: model,
                                           block_sizes=(32,)))
    try:
        assert Int4WeightOnly(algorithm="blocks-of-32", block_size=32).block_size == 32
        with pytest.raises(ValueError, match="block_size=64 does not apply to algorithm "
                                             "'blocks-of-32'; it takes 32"):
            Int4WeightOnly(algorithm="blocks-of-32", block_size=64)
        with pytest.raises(ValueError, match="power of two >= 16"):
            Int4WeightOnly(algorithm="blocks-of-32", block_size=24)
    finally:
        INT4_ALGORITHMS.unregister("blocks-of-32")


@pytest.mark.parametrize("block_sizes, message", [([32, 512], None),
                                                  ([24], "block_sizes must be a power of two >= 16.*got 24"),
                                                  ([8], "block_sizes must be a power of two >= 16.*got 8")])
def test_the_decoder_stage_holds_block_sizes_to_the_same_rule(block_sizes, message):
    from edgepack.compress.quantize.decoder_quantize_stage import QuantizeDecoderConfig

    if message is None:
        assert QuantizeDecoderConfig(block_sizes=block_sizes).block_sizes == block_sizes
        return
    with pytest.raises(ValueError, match=message):
        QuantizeDecoderConfig(block_sizes=block_sizes)
