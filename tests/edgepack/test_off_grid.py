"""SmolLM2 moved off its 4-bit grid (edgepack.zoo.smollm2.off_grid): every weight matrix gets
seeded noise scaled by its own spread, a tied matrix once, and the setting is checked."""

import math

import pytest
import torch

from edgepack.zoo.smollm2 import off_grid
from tests.tiny_decoder import tiny_llama


def test_every_matrix_moves_by_its_own_spread_and_the_rest_stays():
    model = tiny_llama(vocab_size=96)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    off_grid(model, 0.03, seed=1)
    for name, weight in model.named_parameters():
        change = (weight - before[name]).detach()
        if weight.dim() == 2:
            assert float(change.std()) == pytest.approx(0.03 * float(before[name].std()),
                                                        rel=0.15), name
        else:
            assert torch.equal(change, torch.zeros_like(change)), name   # norms untouched
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_the_noise_is_seeded():
    first, second, other = (off_grid(tiny_llama(vocab_size=96), 0.03, seed=s) for s in (4, 4, 5))
    weight = "model.layers.0.mlp.down_proj.weight"
    params = [dict(m.named_parameters())[weight] for m in (first, second, other)]
    assert torch.equal(params[0], params[1]) and not torch.equal(params[0], params[2])


@pytest.mark.parametrize("share", [math.nan, math.inf, -0.1, 2.0, "0.03"])
def test_a_noise_that_is_not_a_share_is_refused(share):
    with pytest.raises(ValueError, match="off_grid_noise must be a number in"):
        off_grid(tiny_llama(vocab_size=96), share)
