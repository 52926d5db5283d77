"""Saving and loading torch weights safely (hostile files are in test_footguns.py)."""

import warnings

import pytest
import torch
from torch import nn

from edgepack.export.weights import load_weights, read_weights, save_weights


def small_net(width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv1d(1, width, 3), nn.BatchNorm1d(width), nn.ReLU(),
                         nn.Flatten(), nn.Linear(width * 6, 2))


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    model = small_net()
    path = save_weights(model, tmp_path / "w.safetensors", metadata={"epoch": 3})
    restored = load_weights(small_net(), path)
    x = torch.randn(2, 1, 8)
    torch.testing.assert_close(restored.eval()(x), model.eval()(x))


def test_a_structured_pruned_model_is_rebuilt_from_its_builder(tmp_path):
    torch.manual_seed(0)
    narrow = small_net(width=3)  # what structured pruning leaves of a width-8 net
    save_weights(narrow, tmp_path / "w.safetensors")
    rebuilt = load_weights(small_net(width=8), tmp_path / "w.safetensors")
    assert rebuilt[0].out_channels == 3 and rebuilt[4].in_features == 18
    x = torch.randn(2, 1, 8)
    torch.testing.assert_close(rebuilt.eval()(x), narrow.eval()(x))


def test_torch_zip_checkpoint_loads_with_weights_only(tmp_path):
    model = small_net()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt.pt")
    tensors = read_weights(tmp_path / "ckpt.pt")
    assert set(tensors) == set(model.state_dict())


def test_trust_pickle_warns(tmp_path):
    torch.save(small_net().state_dict(), tmp_path / "ckpt.pt")
    with pytest.warns(UserWarning, match="runs any code"):
        read_weights(tmp_path / "ckpt.pt", trust_pickle=True)


def test_safe_path_does_not_warn(tmp_path):
    torch.save(small_net().state_dict(), tmp_path / "ckpt.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_weights(tmp_path / "ckpt.pt")


@pytest.mark.parametrize("stored, expected", [
    ({"0.weight": torch.zeros(8, 1, 3)}, "missing"),
    ({**small_net().state_dict(), "extra": torch.zeros(1)}, "unexpected"),
])
def test_keys_that_do_not_match_are_named(tmp_path, stored, expected):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in stored.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match=expected):
        load_weights(small_net(), tmp_path / "w.safetensors")


def test_a_checkpoint_of_non_tensors_is_refused(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="does not hold a state dict of tensors"):
        read_weights(tmp_path / "ckpt.pt")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_weights(tmp_path / "nope.safetensors")
