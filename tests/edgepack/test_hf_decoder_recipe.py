"""A user's own decoder in a recipe: a local Hugging Face folder of an architecture the
project's examples do not use (Qwen2, sliding window), its text tokenized with its own
tokenizer, exported, quantized, and deployable with onnxruntime-genai."""

import json
import textwrap

import pytest

from edgepack.pipeline.recipe_runner import run_recipe
from edgepack.zoo.hf_decoder import hf_text
from tests.decoder_architectures import make_architecture_folder
from tests.edgepack.helpers import error_line, run_cli
from tests.tiny_decoder import TINY_TEXT, genai_greedy, train_tiny_tokenizer

pytest.importorskip("optimum.exporters.onnx")

RECIPE = """\
name = "my-qwen2"

[metric]
kind = "language-model"
max_perplexity_ratio = 1.5
min_top1_agreement = 0.0
prompt_tokens = 24
new_tokens = 4
rounds = 1

[model]
build = "edgepack.zoo.hf_decoder:hf_decoder"
args = {{ folder = "{folder}" }}

[data]
provider = "edgepack.zoo.hf_decoder:hf_text"
args = {{ folder = "{folder}", text_file = "{text}", eval_windows = 3, calibration_windows = 1, train_windows = 1, window_tokens = 16, prompts = 2 }}

[[stages]]
kind = "export-decoder"

[[stages]]
kind = "quantize-decoder"
algorithms = ["rtn"]
block_sizes = [32]
symmetric = [true]
accuracy_levels = [4]
int8_dynamic = false
"""


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("user-model")
    train_tiny_tokenizer(root / "tokenizer")
    folder = make_architecture_folder("qwen2", root / "qwen2", root / "tokenizer")
    text = root / "my_text.txt"
    text.write_text("\n".join(TINY_TEXT), encoding="utf-8")
    return folder, text


def test_the_provider_tokenizes_the_users_text_with_the_models_tokenizer(user_model):
    from tokenizers import Tokenizer

    folder, text = user_model
    data = hf_text(folder=str(folder), text_file=str(text), eval_windows=2,
                   calibration_windows=1, train_windows=1, window_tokens=16, prompts=2)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    held_out = tokenizer.encode(" ".join(TINY_TEXT[-(len(TINY_TEXT) // 5):]),
                                add_special_tokens=False).ids
    assert data["evaluation"][0] == held_out[:16]         # the last fifth, held out
    assert len(data["calibration"]) == 1 and len(data["prompts"]) == 2
    assert data["tokenizer_dir"] == str(folder)


def test_a_users_folder_runs_end_to_end_and_deploys(user_model, tmp_path):
    folder, text = user_model
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(folder=folder, text=text))
    report = run_recipe(recipe, tmp_path / "out", progress=False)
    export, quantize = report["stages"]
    assert export["kept"] and report["outcome"]["deployable"]
    assert export["record"]["weights"] == ["model.safetensors"]
    final = tmp_path / "out" / report["final_artifact"]
    genai = json.loads((final.parent / "genai_config.json").read_text())
    assert genai["model"]["type"] == "decoder"
    assert len(genai_greedy(final.parent, [1, 40, 41, 42], 4, exact=True)) == 4


@pytest.mark.parametrize("args, message", [
    ('folder = "{folder}", gguf = "x.gguf"', "exactly one of folder"),
    ('folder = "{folder}", text_file = "{bad}"', "is not UTF-8 text"),
    ('folder = "{folder}", text_file = "{short}"', "at least 5 are needed"),
    ('folder = "{folder}", window_tokens = 0', "window_tokens must be an integer"),
    ('folder = "{folder}", prompts = 99', "prompts must be in [1, 8]"),
    ('folder = "{empty}"', "expected a folder holding config.json"),
])
def test_bad_provider_arguments_are_one_line(user_model, tmp_path, capsys, args, message):
    folder, text = user_model
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n" * 10)
    (tmp_path / "short.txt").write_text("one line\n")
    (tmp_path / "empty").mkdir()
    recipe = tmp_path / "recipe.toml"
    body = RECIPE.format(folder=folder, text=text)
    data_args = "{ " + args.format(folder=folder, bad=tmp_path / "bad.txt",
                                   short=tmp_path / "short.txt", empty=tmp_path / "empty") + " }"
    body = body[:body.index("args = {", body.index("[data]"))] + f"args = {data_args}\n" + \
        body[body.index("[[stages]]"):]
    recipe.write_text(textwrap.dedent(body))
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "out")
    assert code == 2 and message in error_line(err)
    assert not (tmp_path / "out").exists()
