"""A text model's output check that ran on random token ids says so (issue 38, point 9).

Random ids are no text: int8 that is right on real sentences can fail a check on them, and
the generic cause ("some layers lose too much in 8 bits") sends the user the wrong way. With
no --data and no tokenizer.json beside the model, a failed check names random ids as the
likely cause and says what to pass; with real data, it does not."""

from __future__ import annotations

import numpy as np

from edgepack.compress.quantize.text_inputs import GENERATED_SOURCE, random_ids_cause
from tests.compress.test_quantize_checks import tiny_attention, token_data
from tests.edgepack.helpers import run_cli

# the check made to fail on any int8 model, so the message is what is tested
STRICT = ["--mode", "dynamic", "--min-cosine", "1.0", "--no-search", "--no-speed-check",
          "--no-accuracy-aware", "--no-latency-aware"]


def test_a_check_on_random_token_ids_says_so_and_what_to_pass(tmp_path, capsys):
    model = tiny_attention(tmp_path / "encoder.onnx")
    code, err = run_cli(capsys, "quantize", model, "-o", tmp_path / "q.onnx", *STRICT)
    assert code == 1, err
    assert ("likely cause: the check ran on random token ids (no --data was given and there "
            "is no tokenizer.json beside encoder.onnx)") in err
    assert "pass --data CALIB.npz with real token ids" in err
    assert "or put the model's tokenizer.json beside it" in err
    assert not (tmp_path / "q.onnx").exists()


def test_a_check_on_real_token_ids_does_not_blame_them(tmp_path, capsys):
    model = tiny_attention(tmp_path / "encoder.onnx")
    np.savez(tmp_path / "calib.npz", **token_data())
    code, err = run_cli(capsys, "quantize", model, "-o", tmp_path / "q.onnx", "--data",
                        tmp_path / "calib.npz", *STRICT)
    assert code == 1 and "likely cause:" in err
    assert "random token ids" not in err


def test_random_ids_are_named_only_for_token_inputs_checked_on_generated_data(tmp_path):
    model = tmp_path / "m.onnx"
    ids = [{"input_ids": np.zeros((2, 4), np.int64)}]
    assert random_ids_cause(model, ids, GENERATED_SOURCE).startswith("the check ran on random")
    assert random_ids_cause(model, ids, "evaluation data") == ""
    assert random_ids_cause(model, [{"x": np.zeros((2, 4), np.float32)}],
                            GENERATED_SOURCE) == ""
    (tmp_path / "tokenizer.json").write_text("{}")   # beside it, but no use for this model
    assert "the tokenizer.json beside m.onnx gave no sentences" in random_ids_cause(
        model, ids, GENERATED_SOURCE)
