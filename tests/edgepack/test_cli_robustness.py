"""``edgepack bench --robustness``: attacks on the file as given; bad flags are one line, exit 2."""

import json

import numpy as np
import pytest

from edgepack.cli.main import main
from edgepack.export.weights import save_weights
from tests.bench.conftest import token_model
from tests.bench.robust_models import eval_arrays, export_tiny, quantize_tiny, trained_tiny

QUICK = ["--warmup", "1", "--min-runs", "3", "--min-time", "0"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-robust")
    fp32 = export_tiny(trained_tiny(), folder / "tiny.onnx")
    x, y = eval_arrays(96)
    np.savez(folder / "eval.npz", input=x, labels=y)
    return {"fp32": fp32, "int8": quantize_tiny(fp32, folder / "tiny.int8.onnx"),
            "data": folder / "eval.npz",
            "weights": save_weights(trained_tiny(), folder / "tiny.safetensors")}


def test_black_box_and_noise_without_a_source(files, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["bench", str(files["int8"]), "--data", str(files["data"]), "--robustness",
                 "0.2,0.4", "--queries", "30", "--json", str(out)] + QUICK)
    stdout = capsys.readouterr().out
    assert code == 0
    assert "Square eps=0.4" in stdout and "noise eps=0.2" in stdout and "FGSM" not in stdout
    robustness = json.loads(out.read_text())[0]["robustness"]
    assert robustness["queries"]["0.4"]["max"] <= 30
    assert robustness["square"]["0.4"] < robustness["noise"]["0.4"]
    assert set(robustness["skipped"]) == {"fgsm", "pgd"}


def test_transfer_attack_from_the_torch_source(files, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["bench", str(files["int8"]), "--data", str(files["data"]), "--robustness",
                 "0.3", "--attacks", "fgsm,pgd", "--source", "edgepack.zoo:mnist1d_cnn",
                 "--source-args", '{"width": 16}', "--weights", str(files["weights"]),
                 "--json", str(out)] + QUICK)
    assert code == 0, capsys.readouterr().err
    robustness = json.loads(out.read_text())[0]["robustness"]
    assert robustness["crafted_on"] == "--source"
    assert robustness["pgd"]["0.3"] < robustness["clean"] - 0.2


def test_token_inputs_are_reported_not_applicable(tmp_path, capsys):
    model = token_model(tmp_path / "tok.onnx")
    np.savez(tmp_path / "tok.npz", input_ids=np.ones((4, 8), np.int64),
             attention_mask=np.ones((4, 8), np.int64), labels=np.zeros(4, np.int64))
    code = main(["bench", str(model), "--data", str(tmp_path / "tok.npz"), "--robustness",
                 "0.1"] + QUICK)
    assert code == 0
    assert "not applicable: the model has 2 inputs" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--robustness", "0.1,x"], "--robustness '0.1,x' is not valid"),
    (["--robustness", "0"], "positive numbers"),
    (["--robustness", "0.1", "--attacks", "pgd,sqare"], "did you mean 'square'?"),
    (["--robustness", "0.1", "--queries", "many"], "--queries 'many' is not valid"),
    (["--robustness", "0.1", "--robustness-samples", "0"], "expected a positive integer"),
    (["--robustness", "0.1", "--weights", "w.safetensors"], "pass --source module:function"),
    (["--robustness", "0.1", "--source", "edgepack.zoo:mnist1d_cnn", "--source-args", "{width"],
     "--source-args is not valid JSON"),
    (["--robustness", "0.1", "--source", "edgepack.zoo:nope"], "has no 'nope'"),
    (["--attacks", "pgd"], "--attacks needs --robustness"),
])
def test_bad_flags_exit_2_with_one_line(files, flags, message, capsys):
    code = main(["bench", str(files["fp32"]), "--data", str(files["data"])] + flags + QUICK)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_robustness_needs_data(files, capsys):
    assert main(["bench", str(files["fp32"]), "--robustness", "0.1"] + QUICK) == 2
    assert "--robustness needs --data" in capsys.readouterr().err
