"""``--resume`` of a finished decoder run checks what it resumes: another recipe (an MNIST
export), the same recipe with a stricter threshold, or ``[model]`` pointing at other weights
is refused with exit 2 naming the change, and nothing in the run folder changes."""

from __future__ import annotations

import shutil

import pytest

from tests.edgepack.helpers import error_line, run_cli
from tests.edgepack.test_decoder_pipeline import RECIPE
from tests.edgepack.test_resume_inputs import snapshot

pytest.importorskip("optimum.exporters.onnx")

MNIST_EXPORT = """\
name = "mnist-export"
[model]
build = "edgepack.zoo:mnist1d_cnn"
args = { width = 4 }
[data]
args = { samples = 300, transfer_samples = 0, calibration_samples = 16 }
[[stages]]
kind = "export"
"""


def _decoder_run(hf_source, root):
    """A private copy of the tiny decoder's folder, a recipe on it, and a finished run."""
    from edgepack.cli.main import main

    hf = root / "hf"
    shutil.copytree(hf_source, hf)
    recipe = root / "recipe.toml"
    recipe.write_text(RECIPE.format(folder=hf, ratio=1.5))
    assert main(["run", str(recipe), "--out", str(root / "run"), "--no-progress"]) == 0
    return root


@pytest.fixture(scope="module")
def decoder_run(tiny_decoder, tmp_path_factory):
    return _decoder_run(tiny_decoder[0], tmp_path_factory.mktemp("decoder-resume"))


def _refused(capsys, recipe, out, named: str) -> None:
    before = snapshot(out)
    code, err = run_cli(capsys, "run", recipe, "--out", out, "--resume", "--no-progress")
    line = error_line(err)
    assert code == 2 and named in line and str(out) in line, line
    assert snapshot(out) == before


def test_resume_with_the_same_recipe_passes(decoder_run, capsys):
    code, err = run_cli(capsys, "run", decoder_run / "recipe.toml", "--out", decoder_run / "run",
                        "--resume", "--no-progress")
    assert code == 0 and "[01-export-decoder] done in an earlier run" in err


def test_a_stricter_threshold_is_refused(decoder_run, tmp_path, capsys):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text((decoder_run / "recipe.toml").read_text().replace(
        "max_perplexity_ratio = 1.5", "max_perplexity_ratio = 1.001"))
    _refused(capsys, recipe, decoder_run / "run",
             "recipe key metric.max_perplexity_ratio was 1.5, now 1.001")


def test_another_recipe_is_refused(decoder_run, tmp_path, capsys):
    recipe = tmp_path / "mnist.toml"
    recipe.write_text(MNIST_EXPORT)
    _refused(capsys, recipe, decoder_run / "run", 'recipe key name was "tiny-decoder"')


def test_model_pointing_at_another_folder_is_refused(decoder_run, tmp_path, capsys):
    other = tmp_path / "other-hf"
    shutil.copytree(decoder_run / "hf", other)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text((decoder_run / "recipe.toml").read_text().replace(
        f'folder = "{decoder_run / "hf"}" }}\n\n[data]', f'folder = "{other}" }}\n\n[data]'))
    _refused(capsys, recipe, decoder_run / "run", "recipe key model.args.folder")


def test_other_weights_in_the_same_folder_are_refused_naming_the_file(tiny_decoder, tmp_path,
                                                                      capsys):
    from tests.tiny_decoder import tiny_llama

    root = _decoder_run(tiny_decoder[0], tmp_path)
    capsys.readouterr()
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(root / "hf" / "tokenizer.json")).get_vocab_size()
    tiny_llama(vocab, seed=1).save_pretrained(root / "hf")     # same names, other weights
    weights = root / "hf" / "model.safetensors"
    _refused(capsys, root / "recipe.toml", root / "run",
             f"file {weights} (model.args.folder/model.safetensors) changed")
