"""torch -> ONNX: exporters, dynamic axes, names, external data, parity and failures."""

import os

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgepack.core.onnx_files import external_tensor_names
from edgepack.export.parity import ParityError
from edgepack.export.torch_export import ExportConfig, ExportError, export_onnx
from tests.export.tiny import SequenceNet, cpu_session, run_onnx


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_matches_torch_at_other_batch_sizes(tmp_path, tiny_net, exporter):
    path = tmp_path / "model.onnx"
    result = export_onnx(tiny_net, ExportConfig(exporter=exporter), torch.randn(1, 1, 16), path,
                         parity_inputs=torch.randn(8, 1, 16))
    parity = result.record["parity"]
    assert parity["ok"] and [o["batch"] for o in parity["outputs"]] == [1, 8]
    assert all(line.startswith("  \u2713 logits") for line in parity["lines"])
    batch = torch.randn(5, 1, 16)  # a batch size neither trace nor parity used
    with torch.no_grad():
        expected = tiny_net.eval()(batch).numpy()
    np.testing.assert_allclose(run_onnx(path, batch.numpy())[0], expected, atol=1e-5)
    assert result.record["size_bytes"] == os.path.getsize(path)


def test_static_batch_fixes_the_batch_axis(tmp_path, tiny_net):
    path = tmp_path / "model.onnx"
    export_onnx(tiny_net, ExportConfig(dynamic_batch=False), torch.randn(2, 1, 16), path)
    assert cpu_session(path).get_inputs()[0].shape == [2, 1, 16]


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dynamic_sequence_axis(tmp_path, exporter):
    torch.manual_seed(0)
    model = SequenceNet()
    path = tmp_path / "model.onnx"
    result = export_onnx(model, ExportConfig(exporter=exporter, dynamic_axes=(1,)),
                         torch.randn(1, 5, 6), path, parity_inputs=torch.randn(4, 5, 6))
    labels = [o["label"] for o in result.record["parity"]["outputs"]]
    assert labels == ["batch 1", "batch 4", "batch 4, axis 1 = 4"]
    for batch, length in [(3, 2), (2, 11)]:
        x = torch.randn(batch, length, 6)
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(run_onnx(path, x.numpy())[0], expected, atol=1e-5)


def test_input_and_output_names_and_opset(tmp_path):
    class TwoInTwoOut(nn.Module):
        def forward(self, a, b):
            return a + b, a * b

    path = tmp_path / "model.onnx"
    config = ExportConfig(exporter="torchscript", opset=13, input_names=("left", "right"),
                          output_names=("total", "product"))
    result = export_onnx(TwoInTwoOut(), config, (torch.randn(2, 3), torch.randn(2, 3)), path)
    session = cpu_session(path)
    assert [i.name for i in session.get_inputs()] == ["left", "right"]
    assert [o.name for o in session.get_outputs()] == ["total", "product"]
    assert {o["name"] for o in result.record["parity"]["outputs"]} == {"total", "product"}
    opsets = {d.domain: d.version for d in onnx.load(str(path)).opset_import}
    assert opsets[""] == 13


def test_every_output_is_compared_even_without_names(tmp_path):
    class TwoOut(nn.Module):
        def forward(self, x):
            return x + 1, x * 2

    result = export_onnx(TwoOut(), ExportConfig(), torch.randn(2, 3), tmp_path / "m.onnx")
    assert len({o["name"] for o in result.record["parity"]["outputs"]}) == 2


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_small_threshold_forces_external_data(tmp_path, exporter):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    out_dir = tmp_path / "out"
    path = out_dir / "model.onnx"
    config = ExportConfig(exporter=exporter, external_data_threshold=1000)
    result = export_onnx(model, config, torch.randn(2, 64), path)
    assert sorted(os.listdir(out_dir)) == ["model.onnx", "model.onnx.data"]  # no temp left
    header = onnx.load(str(path), load_external_data=False)
    assert external_tensor_names(header)
    assert result.record["external_data"] is True
    assert result.record["size_bytes"] == (os.path.getsize(path)
                                           + os.path.getsize(out_dir / "model.onnx.data"))
    x = torch.randn(3, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(run_onnx(path, x.numpy())[0], expected, atol=1e-5)


def test_default_threshold_keeps_small_weights_inline(tmp_path, tiny_net):
    result = export_onnx(tiny_net, ExportConfig(), torch.randn(1, 1, 16), tmp_path / "m.onnx")
    assert result.record["external_data"] is False
    assert os.listdir(tmp_path) == ["m.onnx"]


class Noisy(nn.Module):
    """Adds fresh noise on every call: torch and ONNX Runtime can never agree."""

    def forward(self, x):
        return x + torch.rand_like(x)


def test_parity_mismatch_raises_parity_error_with_every_line(tmp_path):
    with pytest.raises(ParityError) as info:
        export_onnx(Noisy(), ExportConfig(), torch.randn(2, 8), tmp_path / "m.onnx",
                    parity_inputs=torch.randn(4, 8))
    assert info.value.exit_code == 1
    message = str(info.value)
    assert message.count("\u2717 logits") == 2 and "max abs" in message
    assert "torch fp32" in message and "allowed" in message
    assert not any(tmp_path.iterdir())  # a model that failed its check is not left behind


class Float32Only(nn.Module):
    """Casts its input to float32 itself: its float64 copy cannot run."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 4)

    def forward(self, x):
        return self.linear(x.to(torch.float32))


def test_a_model_that_cannot_run_in_float64_is_judged_against_float32_and_says_so(tmp_path):
    from edgepack.export.parity import FLOAT32_REFERENCE_BOUND

    result = export_onnx(Float32Only(), ExportConfig(), torch.randn(2, 8), tmp_path / "m.onnx")
    parity = result.record["parity"]
    assert parity["ok"]
    assert parity["rule"]["reference"].startswith("torch float32 (the model does not run in "
                                                  "float64")
    assert all(o["torch_error"] is None and o["allowed"] == FLOAT32_REFERENCE_BOUND
               for o in parity["outputs"])


def test_parity_against_float64_and_torch_float32_error(tmp_path):
    """The rule's figures: ONNX Runtime's error against a float64 torch run, torch's own
    float32 error on the same inputs, and the bound derived from it."""
    from edgepack.export.parity import ERROR_FLOOR, PARITY_MULTIPLE

    model = nn.Sequential(nn.Linear(8, 64), nn.GELU(), nn.Linear(64, 4))
    result = export_onnx(model, ExportConfig(), torch.randn(2, 8), tmp_path / "m.onnx",
                         parity_inputs=torch.randn(6, 8))
    parity = result.record["parity"]
    assert parity["ok"] and parity["rule"]["reference"] == "torch float64"
    assert parity["rule"]["multiple"] == PARITY_MULTIPLE
    for output in parity["outputs"]:
        assert output["torch_error"] is not None
        assert output["allowed"] == pytest.approx(
            PARITY_MULTIPLE * max(output["torch_error"], ERROR_FLOOR))
        assert output["error"] <= output["allowed"]
        assert output["top1"]["agree"] == output["top1"]["positions"]


def test_a_one_percent_change_fails_the_rule(tmp_path):
    model = nn.Sequential(nn.Linear(8, 64), nn.GELU(), nn.Linear(64, 4))
    path = tmp_path / "m.onnx"
    export_onnx(model, ExportConfig(), torch.randn(2, 8), path)
    from edgepack.export.torch_parity import check_parity

    with torch.no_grad():
        model[2].weight.mul_(1.01)
    parity = check_parity(model, path, (torch.randn(6, 8),), multiple=16.0)
    assert not parity["ok"]
    assert all(o["error"] > 10 * o["allowed"] for o in parity["outputs"])


def test_warn_only_keeps_the_model_and_records_the_mismatch(tmp_path):
    result = export_onnx(Noisy(), ExportConfig(fail_on_mismatch=False), torch.randn(2, 8),
                         tmp_path / "m.onnx")
    assert result.record["parity"]["ok"] is False
    assert result.record["parity"]["max_abs"] > 0
    assert (tmp_path / "m.onnx").is_file()


class DataDependentGate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # Python control flow on a tensor value
            return x * 2
        return x - 1


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = DataDependentGate()

    def forward(self, x):
        return self.gate(self.fc(x))


def test_unexportable_module_is_named_and_the_fallback_suggested(tmp_path):
    with pytest.raises(ExportError) as info:
        export_onnx(GatedNet(), ExportConfig(), torch.randn(2, 4), tmp_path / "m.onnx")
    message = str(info.value)
    assert info.value.exit_code == 1
    assert "\n" not in message
    assert "module gate (DataDependentGate)" in message
    assert "if x.sum() > 0" in message
    assert "--exporter torchscript" in message
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_unsupported_op_is_named_and_the_fallback_suggested(tmp_path):
    class Spectrum(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    with pytest.raises(ExportError) as info:
        export_onnx(Spectrum(), ExportConfig(exporter="torchscript"), torch.randn(2, 8),
                    tmp_path / "m.onnx")
    message = str(info.value)
    assert "aten::fft_rfft" in message and "--exporter dynamo" in message
    assert "\n" not in message


def test_export_uses_eval_mode_and_restores_training(tmp_path, tiny_net):
    tiny_net.train()  # dropout on, batch norm on batch statistics
    path = tmp_path / "model.onnx"
    export_onnx(tiny_net, ExportConfig(), torch.randn(1, 1, 16), path)
    assert tiny_net.training  # the caller's mode is given back
    x = torch.randn(6, 1, 16)
    with torch.no_grad():
        expected = tiny_net.eval()(x).numpy()
    first, second = run_onnx(path, x.numpy())[0], run_onnx(path, x.numpy())[0]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, expected, atol=1e-5)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Dropout" not in ops


@pytest.mark.parametrize("kwargs, expected", [
    ({"exporter": "dynamoo"}, "did you mean 'dynamo'"),
    ({"opset": 30}, "outside the supported range"),
    ({"opset": 13}, "dynamo exporter needs opset >= 18"),
    ({"dynamic_axes": (0,)}, "axis 0 is the batch"),
    ({"dynamic_axes": (1, 1)}, "must be distinct"),
    ({"external_data_threshold": -1}, "external_data_threshold"),
    ({"parity_multiple": -1.0}, "parity_multiple"),
    ({"parity_multiple": float("nan")}, "parity_multiple"),
    ({"input_names": ()}, "must not be empty"),
])
def test_config_errors_name_the_field(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        ExportConfig(**kwargs)


def test_config_round_trips_through_a_dict():
    config = ExportConfig(exporter="torchscript", opset=17, dynamic_axes=(1, 2),
                          input_names=("ids",), external_data_threshold=10)
    assert ExportConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("kwargs, example, expected", [
    ({"input_names": ("a", "b")}, torch.randn(2, 3), "has 2 names but the model takes 1"),
    ({"dynamic_axes": (2,)}, torch.randn(2, 3), "has only 2 dims"),
])
def test_input_mismatch_is_bad_input(tmp_path, kwargs, example, expected):
    with pytest.raises(ValueError, match=expected):
        export_onnx(nn.Identity(), ExportConfig(**kwargs), example, tmp_path / "m.onnx")


def test_output_must_be_an_onnx_file(tmp_path, tiny_net):
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(tiny_net, ExportConfig(), torch.randn(1, 1, 16), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="existing folder"):
        export_onnx(tiny_net, ExportConfig(), torch.randn(1, 1, 16), tmp_path)


# ------------------------------------------------------------------ command line


def run_cli(*argv) -> int:
    from edgepack.cli.main import main

    return main(list(argv))


def test_cli_exports_and_optimizes(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    code = run_cli("export", "--model", "edgepack.zoo:mnist1d_cnn", "--args", '{"width": 4}',
                   "--input-shape", "1,1,40", "--optimize", "extended", "-o", str(out))
    printed = capsys.readouterr().out
    assert code == 0
    assert out.is_file() and (tmp_path / "model.opt.onnx").is_file()
    assert printed.count("\u2713 logits") == 4  # two batches, exported and optimized


@pytest.mark.parametrize("argv, expected", [
    ([], "exactly one of --model"),
    (["--model", "edgepack.zoo:mnist1d_cnn", "--hf", "x"], "exactly one of --model"),
    (["--model", "edgepack.zoo:mnist1d_cnn"], "--model needs --input-shape"),
    (["--hf", "some/hub-id"], "--hf needs --task"),
    (["--model", "edgepack.zoo:mnist1d_cnn", "--input-shape", "1,1,40", "--optimize", "al"],
     "did you mean 'all'"),
    (["--model", "edgepack.zoo:mnist1d_cnn", "--input-shape", "1,x"], "--input-shape"),
])
def test_cli_bad_flags_exit_2_with_one_line(tmp_path, capsys, argv, expected):
    code = run_cli("export", *argv, "-o", str(tmp_path / "m.onnx"))
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_cli_export_failure_exits_1(tmp_path, capsys, monkeypatch):
    module = tmp_path / "gated_model.py"
    module.write_text("from tests.export.test_torch_export import GatedNet\n"
                      "def build():\n    return GatedNet()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code = run_cli("export", "--model", "gated_model:build", "--input-shape", "2,4",
                   "-o", str(tmp_path / "m.onnx"))
    err = capsys.readouterr().err
    assert code == 1
    assert "try the torchscript exporter" in err
