"""Export footguns: surprising behaviour pinned down, silent-wrong-result cases first.

Each test names a way an export or a model file goes wrong for users of this kind of tool
and shows that edgepack either gets it right or refuses with one clear line.
"""

import copy
import os
import pickle
import struct
import zipfile

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgepack.core.onnx_files import check_onnx_file, resolve_inside
from edgepack.export.parity import ParityError
from edgepack.export.torch_export import ExportConfig, export_onnx
from edgepack.export.weights import read_weights
from tests.export.tiny import TinyNet, add_model, cpu_session, run_onnx

# ----------------------------------------------------- silent wrong results at export


def test_dropout_left_in_training_mode_is_exported_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    model = TinyNet().train()
    x = torch.randn(4, 1, 16)
    path = tmp_path / "m.onnx"
    export_onnx(model, ExportConfig(), x[:1], path)
    onnx_out = run_onnx(path, x.numpy())[0]
    with torch.no_grad():
        eval_out = model.eval()(x).numpy()
        # a training-mode pass also moves batch-norm statistics: run it on a copy
        train_out = copy.deepcopy(model).train()(x).numpy()
    assert np.abs(train_out - eval_out).max() > 1e-2  # the mode matters for this model
    np.testing.assert_allclose(onnx_out, eval_out, atol=1e-5)


def test_a_batch_1_example_does_not_fix_the_batch_axis_to_1(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    path = tmp_path / "m.onnx"
    export_onnx(model, ExportConfig(), torch.randn(1, 1, 16), path)  # torch.export would
    batch_axis = cpu_session(path).get_inputs()[0].shape[0]          # specialise size 1
    assert isinstance(batch_axis, str)
    x = torch.randn(7, 1, 16)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(run_onnx(path, x.numpy())[0], expected, atol=1e-5)


def test_torchscript_bakes_in_a_data_dependent_branch_and_parity_catches_it(tmp_path):
    class SignGate(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x - 1

    positive = torch.rand(2, 4) + 0.1  # traced through the `x * 2` branch
    with pytest.raises(ParityError, match="\u2717 logits"):
        export_onnx(SignGate(), ExportConfig(exporter="torchscript"), positive,
                    tmp_path / "m.onnx", parity_inputs=-positive)


def test_fewer_output_names_than_outputs_still_checks_every_output(tmp_path):
    class Pair(nn.Module):
        def forward(self, x):
            return x + 1, x.flip(-1)

    result = export_onnx(Pair(), ExportConfig(exporter="torchscript"), torch.randn(2, 3),
                         tmp_path / "m.onnx")
    assert len({o["name"] for o in result.record["parity"]["outputs"]}) == 2


# ------------------------------------------------------------- hostile ONNX files


def save_with_data(folder, location, offset=0, length=None):
    """A model whose weight is declared at ``location`` (the file itself is up to the test)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(add_model(location=location, offset=offset, length=length), str(path))
    return path


@pytest.mark.parametrize("location, expected", [
    ("../../x", "resolves outside the model's folder"),
    ("../secret.bin", "resolves outside the model's folder"),
    ("/etc/passwd", "must be a relative path"),
    ("\\\\server\\share", "must be a relative path"),
    ("", "must be a relative path"),
])
def test_external_data_outside_the_folder_is_refused(tmp_path, location, expected):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    path = save_with_data(tmp_path / "models" / "a", location)
    with pytest.raises(ValueError, match=expected):
        check_onnx_file(path)


def test_external_data_through_a_symlink_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(tmp_path / "secret.bin", folder / "w.bin")
    with pytest.raises(ValueError, match="goes through a symlink"):
        check_onnx_file(save_with_data(folder, "w.bin"))


def test_external_data_through_a_symlinked_folder_is_refused(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "w.bin").write_bytes(b"\0" * 16)
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(tmp_path / "outside", folder / "data")
    with pytest.raises(ValueError, match="symlink"):
        resolve_inside(folder, "data/w.bin")


@pytest.mark.parametrize("offset, length", [(16, 16), (0, 17), (20, 0)])
def test_external_data_offset_or_length_past_the_end_is_refused(tmp_path, offset, length):
    (tmp_path / "w.bin").write_bytes(b"\0" * 16)
    path = save_with_data(tmp_path, "w.bin", offset=offset, length=length)
    with pytest.raises(ValueError, match="does not fit 'w.bin' \\(16 bytes\\)"):
        check_onnx_file(path)


def test_random_bytes_named_onnx_are_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        check_onnx_file(path)


def test_a_truncated_onnx_file_is_refused(tmp_path, exported):
    data = exported.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match="cut.onnx"):
        check_onnx_file(path)


# ------------------------------------------------------------ hostile weight files


class RunsACommand:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_a_pickle_that_runs_a_command_does_not_run(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    payload = {"w": torch.zeros(2), "evil": RunsACommand(marker)}
    if legacy:
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError, match="model.pt"):
        read_weights(path)
    assert not marker.exists()


class TrainingConfig:
    def __init__(self):
        self.lr = 0.1


def test_an_unsupported_global_is_refused_with_advice(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(2), "config": TrainingConfig()}, path)
    with pytest.raises(ValueError, match="cannot be loaded safely.*--trust-pickle"):
        read_weights(path)


def test_a_truncated_zip_checkpoint_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert not zipfile.is_zipfile(path)
    with pytest.raises(ValueError, match="ckpt.pt"):
        read_weights(path)


def test_a_zero_byte_file_is_refused(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        read_weights(tmp_path / "w.safetensors")


def test_lying_extensions_are_read_by_content(tmp_path):
    from safetensors.torch import save_file

    weights = {"w": torch.arange(4.0)}
    save_file(weights, str(tmp_path / "really-safetensors.pt"))
    torch.save(weights, tmp_path / "really-torch.safetensors")
    for name in ("really-safetensors.pt", "really-torch.safetensors"):
        torch.testing.assert_close(read_weights(tmp_path / name)["w"], weights["w"])


def test_a_text_file_named_safetensors_is_refused(tmp_path):
    (tmp_path / "w.safetensors").write_text("not weights at all")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        read_weights(tmp_path / "w.safetensors")


def test_safetensors_with_a_huge_header_length_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        read_weights(path)


def test_safetensors_with_overlapping_offsets_is_refused(tmp_path):
    header = (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
              b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}')
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        read_weights(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_refused(tmp_path, bad):
    from safetensors.torch import save_file

    save_file({"ok": torch.zeros(2), "head.weight": torch.tensor([1.0, bad])},
              str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="'head.weight' holds NaN or Inf"):
        read_weights(tmp_path / "w.safetensors")
