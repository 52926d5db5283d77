"""Fuzzing the model files ``export`` reads: GGUF files and Hugging Face folders, each made
hostile in a random way (a false count or length, a cut, a size that disagrees with the
tensors, a tensor a column short or missing, a config that is not a model's, the model's own
weights replaced by a decoy).

Every file drawn here is hostile by construction, so the answer must always be exit 2 with
exactly one ``edgepack: error:`` line naming the file, no traceback, nothing written at the
output path and nothing left in the cache, and it must come from the header, before anything
the file claims is allocated (the claims run to terabytes). ``max_examples`` is small so the
suite stays quick.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepack.cli.main import main

pytest.importorskip("gguf", reason="pip install 'edgepack[llm]'")

from tests.export.gguf_files import array_entry, write_llama_gguf  # noqa: E402

SIZES = {"llama.block_count": 2, "llama.embedding_length": 16,
         "llama.feed_forward_length": 32, "llama.attention.head_count": 2}
TENSORS = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
           "blk.1.ffn_up.weight", "blk.1.ffn_down.weight", "blk.1.attn_norm.weight",
           "output_norm.weight"]


def _other_than(value: int):
    return st.integers(1, 2**40).filter(lambda v: v != value)


@st.composite
def hostile_ggufs(draw):
    """(how to make the file, what it is): every kind refused by design."""
    kind = draw(st.sampled_from(["count", "cut", "size", "shape", "drop", "array"]))
    if kind == "count":        # the tensor or metadata count: beyond the file
        return kind, (draw(st.sampled_from([8, 16])), draw(st.integers(2**32, 2**63)))
    if kind == "cut":
        return kind, draw(st.floats(0.0, 0.999))
    if kind == "size":
        key = draw(st.sampled_from(sorted(SIZES)))
        return kind, (key, draw(_other_than(SIZES[key])))
    if kind == "shape":
        return kind, (draw(st.sampled_from(TENSORS)), draw(st.sampled_from([-1, 1])))
    if kind == "drop":
        return kind, draw(st.sampled_from([t for t in TENSORS if t.startswith("blk.")]))
    return kind, (draw(st.sampled_from([0, 4, 8, 10, 12])), draw(st.integers(2**20, 2**60)))


def make_gguf(folder: Path, kind: str, detail) -> Path:
    path = folder / "model.gguf"
    if kind == "size":
        return write_llama_gguf(path, metadata={detail[0]: detail[1]})
    if kind == "shape":
        name, delta = detail
        good = {"token_embd.weight": (261, 16), "blk.0.attn_q.weight": (16, 16),
                "blk.0.attn_k.weight": (8, 16), "blk.1.ffn_up.weight": (32, 16),
                "blk.1.ffn_down.weight": (16, 32), "blk.1.attn_norm.weight": (16,),
                "output_norm.weight": (16,)}[name]
        return write_llama_gguf(path, shapes={name: (*good[:-1], good[-1] + delta)})
    if kind == "drop":
        return write_llama_gguf(path, drop=(detail,))
    raw = bytearray(write_llama_gguf(path).read_bytes())
    if kind == "count":
        offset, value = detail
        raw[offset:offset + 8] = struct.pack("<Q", value)
    elif kind == "cut":
        raw = raw[:int(len(raw) * detail)]
    else:                      # an array whose count the file cannot hold, added first
        item_type, count = detail
        raw[16:24] = struct.pack("<Q", struct.unpack("<Q", raw[16:24])[0] + 1)
        raw[24:24] = array_entry("fuzz.array", item_type, count, b"\0" * 8)
    path.write_bytes(bytes(raw))
    return path


def run_quietly(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def check_refused(argv: list[str], named: Path, out: Path, code: int, text: str) -> None:
    lines = [ln for ln in text.splitlines() if ln.startswith("edgepack: error:")]
    assert code == 2, f"{argv}: exit {code}: {text[-800:]}"
    assert "Traceback" not in text and len(lines) == 1, text
    assert str(named) in lines[0], lines[0]
    assert not out.exists(), f"{argv} failed but wrote {out}"


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(hostile_ggufs())
def test_hostile_gguf_files_are_refused_from_the_header(monkeypatch, case):
    kind, detail = case
    folder = Path(tempfile.mkdtemp(prefix="edgepack-fuzz-gguf-"))
    try:
        monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
        path = make_gguf(folder, kind, detail)
        argv = ["export", "--gguf", str(path), "-o", str(folder / "out")]
        code, text = run_quietly(argv)
        check_refused(argv, path, folder / "out", code, text)
        models = folder / "cache" / "edgepack" / "models"
        assert not models.exists() or not list(models.iterdir())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


CONFIG_VALUES = st.one_of(st.text(max_size=4), st.integers(-5, 0), st.floats(0.5, 64.5),
                          st.booleans(), st.lists(st.integers(1, 4), max_size=2),
                          st.integers(2**40, 2**62))
SIZES_HF = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64,
            "vocab_size": 100, "max_position_embeddings": 64}


@st.composite
def hostile_folders(draw):
    kind = draw(st.sampled_from(["bad value", "other size", "not an object", "cut",
                                 "header length", "narrow", "decoy"]))
    if kind == "bad value":
        return kind, (draw(st.sampled_from(sorted(SIZES_HF))), draw(CONFIG_VALUES))
    if kind == "other size":
        name = draw(st.sampled_from(sorted(SIZES_HF)))
        return kind, (name, draw(st.integers(1, 96).filter(lambda v: v != SIZES_HF[name])))
    if kind == "not an object":
        return kind, draw(st.sampled_from(["[]", "[1, 2]", "3", '"bert"', "null"]))
    if kind == "cut":
        return kind, draw(st.floats(0.0, 0.999))
    if kind == "header length":
        return kind, draw(st.integers(2**24, 2**64 - 1))
    if kind == "narrow":
        return kind, draw(st.sampled_from(["embeddings.word_embeddings.weight",
                                           "encoder.layer.0.attention.self.key.weight",
                                           "encoder.layer.1.output.dense.weight"]))
    return kind, draw(st.booleans())


def edit_folder(folder: Path, kind: str, detail) -> Path:
    """Make the folder hostile; return the file the error line must name."""
    config, weights = folder / "config.json", folder / "model.safetensors"
    if kind in ("bad value", "other size"):
        data = json.loads(config.read_text())
        data[detail[0]] = detail[1]
        config.write_text(json.dumps(data))
        # a value of the wrong kind is named in config.json; a size that is a number but
        # not the tensors' is named where the two disagree (config.json or the weights)
        wrong_kind = kind == "bad value" and (not isinstance(detail[1], int) or
                                              isinstance(detail[1], bool) or detail[1] < 1)
        return config if wrong_kind else folder
    if kind == "not an object":
        config.write_text(detail)
        return config
    if kind == "cut":
        weights.write_bytes(weights.read_bytes()[:int(weights.stat().st_size * detail)])
        return weights
    if kind == "header length":
        weights.write_bytes(struct.pack("<Q", detail) + weights.read_bytes()[8:])
        return weights
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    if kind == "narrow":
        tensors[detail] = tensors[detail][..., :-1].contiguous()
        save_file(tensors, weights, metadata={"format": "pt"})
        return weights
    weights.rename(folder / "adapter.safetensors")
    if detail:
        import torch

        torch.save(tensors, folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    from tests.edgepack.test_hostile_model_files import _bert_folder

    return _bert_folder(tmp_path_factory.mktemp("bert") / "model")


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(hostile_folders())
def test_hostile_model_folders_are_refused_before_loading(bert_folder, case):
    kind, detail = case
    work = Path(tempfile.mkdtemp(prefix="edgepack-fuzz-hf-"))
    try:
        folder = work / "model"
        shutil.copytree(bert_folder, folder)
        named = edit_folder(folder, kind, detail)
        argv = ["export", "--hf", str(folder), "--task", "feature-extraction",
                "-o", str(work / "out")]
        code, text = run_quietly(argv)
        check_refused(argv, named, work / "out", code, text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
