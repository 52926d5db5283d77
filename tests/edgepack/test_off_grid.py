"""SmolLM2 moved off its 4-bit grid (edgepack.zoo.smollm2.off_grid): every weight matrix is
dithered by seeded uniform noise the width of its own blocks' 4-bit steps, a tied matrix once;
a model on a grid leaves it; the setting is checked."""

import math

import pytest
import torch

from edgepack.zoo.smollm2 import off_grid
from tests.tiny_decoder import tiny_llama


def _steps(weight: torch.Tensor) -> torch.Tensor:
    """Each weight's 4-bit step: its 32-block's range / 15, broadcast to the weight."""
    rows, width = weight.shape
    blocks = weight.reshape(rows, width // 32, 32)
    step = (blocks.amax(-1, keepdim=True) - blocks.amin(-1, keepdim=True)) / 15
    return step.expand_as(blocks).reshape(rows, width)


def _on_a_grid(model) -> None:
    """Put every 2-D weight on a block-32 min/max 4-bit grid, as a Q4_1 GGUF holds it."""
    with torch.no_grad():
        for weight in {id(p): p for p in model.parameters() if p.dim() == 2}.values():
            rows, width = weight.shape
            blocks = weight.reshape(rows, width // 32, 32)
            low = blocks.amin(-1, keepdim=True)
            step = (blocks.amax(-1, keepdim=True) - low) / 15
            weight.copy_((torch.round((blocks - low) / step) * step + low).reshape(rows, width))


def _levels_off_grid(weight: torch.Tensor, grid_low, grid_step) -> torch.Tensor:
    """Each weight's distance to the nearest level of a given grid, in steps (0 to 0.5)."""
    rows, width = weight.shape
    position = (weight.reshape(rows, width // 32, 32) - grid_low) / grid_step
    return (position - torch.round(position)).abs().reshape(rows, width)


def test_every_matrix_moves_within_its_own_steps_and_the_rest_stays():
    model = tiny_llama(vocab_size=96)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    off_grid(model, 1.0, seed=1)
    for name, weight in model.named_parameters():
        change = (weight - before[name]).detach()
        if weight.dim() == 2:
            steps = _steps(before[name])
            assert bool((change.abs() <= steps / 2 + 1e-7).all()), name   # within half a step
            spread = steps > 0   # a constant block (the padding token's row) stays as it is
            assert torch.equal(change[~spread], torch.zeros_like(change[~spread])), name
            assert float((change[spread] / steps[spread]).std()) == pytest.approx(
                1 / math.sqrt(12), rel=0.1), name
        else:
            assert torch.equal(change, torch.zeros_like(change)), name   # norms untouched
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_a_model_on_a_grid_leaves_it():
    model = tiny_llama(vocab_size=96)
    _on_a_grid(model)
    weight = model.model.layers[0].mlp.down_proj.weight
    rows, width = weight.shape
    blocks = weight.detach().reshape(rows, width // 32, 32)
    low = blocks.amin(-1, keepdim=True)
    step = (blocks.amax(-1, keepdim=True) - low) / 15
    assert float(_levels_off_grid(weight.detach(), low, step).max()) < 1e-3   # on the grid
    off_grid(model, 1.0, seed=0)
    distance = _levels_off_grid(weight.detach(), low, step)
    # uniform over a whole step: the distance to the old levels is uniform on [0, 0.5]
    assert float(distance.mean()) == pytest.approx(0.25, abs=0.03)
    assert float((distance < 0.01).float().mean()) < 0.05


def test_the_noise_is_seeded():
    first, second, other = (off_grid(tiny_llama(vocab_size=96), 1.0, seed=s) for s in (4, 4, 5))
    weight = "model.layers.0.mlp.down_proj.weight"
    params = [dict(m.named_parameters())[weight] for m in (first, second, other)]
    assert torch.equal(params[0], params[1]) and not torch.equal(params[0], params[2])


@pytest.mark.parametrize("dither", [math.nan, math.inf, -0.1, 2.5, "1.0", True])
def test_a_dither_that_is_not_a_width_in_steps_is_refused(dither):
    with pytest.raises(ValueError, match=r"off_grid_dither must be a number in \[0, 2\]"):
        off_grid(tiny_llama(vocab_size=96), dither)
