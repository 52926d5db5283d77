"""The one output-path check: edgepack recognises its own files by their mark, and refuses
an input, a wrong suffix and any existing file it did not write."""

from __future__ import annotations

import json

import matplotlib
import pytest

from edgepack.core.output_paths import (MARKDOWN_MARK, check_distinct, check_onnx_output,
                                        check_output_folder, check_output_path, mark_onnx_file,
                                        png_metadata, written_by_edgepack)
from tests.bench.conftest import matmul_add

matplotlib.use("Agg")


def _png(path, metadata=None):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    fig.savefig(path, format="png", metadata=metadata)
    plt.close(fig)
    return path


def _file(tmp_path, kind):
    """A file of each kind, edgepack's own or the user's."""
    if kind == "own onnx":
        path = matmul_add(tmp_path / "a.onnx")
        mark_onnx_file(path, "test")
    elif kind == "user onnx":
        path = matmul_add(tmp_path / "a.onnx")
    elif kind == "bytes named onnx":
        path = tmp_path / "a.onnx"
        path.write_bytes(b"\x00garbage")
    elif kind == "own json list":
        path = tmp_path / "a.json"
        path.write_text(json.dumps([{"model": "m", "edgepack_version": "0.1.0"}]))
    elif kind == "own json report":
        path = tmp_path / "a.json"
        path.write_text(json.dumps({"edgepack_version": "0.1.0", "stages": []}))
    elif kind == "user json":
        path = tmp_path / "a.json"
        path.write_text(json.dumps([{"model": "m"}, {"edgepack_version": 1}]))
    elif kind == "empty json list":
        path = tmp_path / "a.json"
        path.write_text("[]")
    elif kind == "own markdown":
        path = tmp_path / "a.md"
        path.write_text(MARKDOWN_MARK + "\n# Benchmark\n")
    elif kind == "user markdown":
        path = tmp_path / "a.md"
        path.write_text("# my notes\n" + MARKDOWN_MARK + "\n")
    elif kind == "own png":
        path = _png(tmp_path / "a.png", png_metadata("plot"))
    elif kind == "user png":
        path = _png(tmp_path / "a.png")
    elif kind == "truncated own png":
        path = _png(tmp_path / "a.png", png_metadata("plot"))
        path.write_bytes(path.read_bytes()[:30])
    else:  # a text file: no kind of edgepack's
        path = tmp_path / "a.txt"
        path.write_text("notes")
    return path


@pytest.mark.parametrize("kind, own", [
    ("own onnx", True), ("user onnx", False), ("bytes named onnx", False),
    ("own json list", True), ("own json report", True), ("user json", False),
    ("empty json list", False), ("own markdown", True), ("user markdown", False),
    ("own png", True), ("user png", False), ("truncated own png", False), ("text", False),
])
def test_edgepack_recognises_its_own_files_only(tmp_path, kind, own):
    assert written_by_edgepack(_file(tmp_path, kind)) is own


@pytest.mark.parametrize("kind", ["user onnx", "bytes named onnx", "user json", "user png",
                                  "user markdown"])
def test_an_existing_user_file_is_refused_unless_overwrite(tmp_path, kind):
    path = _file(tmp_path, kind)
    with pytest.raises(ValueError, match="edgepack did not write; .*--overwrite"):
        check_output_path(path, flag="-o", suffixes=(path.suffix,))
    assert check_output_path(path, flag="-o", suffixes=(path.suffix,), overwrite=True) == path


@pytest.mark.parametrize("kind", ["own onnx", "own json list", "own markdown", "own png"])
def test_edgepack_may_write_over_its_own_file(tmp_path, kind):
    path = _file(tmp_path, kind)
    assert check_output_path(path, flag="-o", suffixes=(path.suffix,)) == path


def test_a_wrong_suffix_is_refused_even_for_a_new_file(tmp_path):
    with pytest.raises(ValueError, match=r"--json .*notes.txt must end in \.json"):
        check_output_path(tmp_path / "notes.txt", flag="--json", suffixes=(".json",))


def test_an_input_is_refused_even_with_overwrite(tmp_path):
    model = _file(tmp_path, "own onnx")
    with pytest.raises(ValueError, match="is the input file"):
        check_output_path(model, inputs=[model], flag="--keep-failed", suffixes=(".onnx",),
                          overwrite=True)


def test_a_foreign_weights_file_beside_an_onnx_output_is_refused(tmp_path):
    (tmp_path / "m.onnx.data").write_bytes(b"the user's data")
    with pytest.raises(ValueError, match="m.onnx.data exists beside it"):
        check_onnx_output(tmp_path / "m.onnx", flag="-o")
    mark_onnx_file(matmul_add(tmp_path / "m.onnx"), "export")
    assert check_onnx_output(tmp_path / "m.onnx", flag="-o") == tmp_path / "m.onnx"


def test_two_outputs_may_not_be_one_file(tmp_path):
    with pytest.raises(ValueError, match="-o and --keep-failed are the same file"):
        check_distinct({"-o": tmp_path / "a.onnx", "--keep-failed": tmp_path / "." / "a.onnx"})
    check_distinct({"-o": tmp_path / "a.onnx", "--keep-failed": None})


def test_an_output_folder_is_new_empty_or_recognised(tmp_path):
    def is_own(folder):
        return (folder / "MINE").exists()

    assert check_output_folder(tmp_path / "new", is_own=is_own)
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty", is_own=is_own)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "thesis.tex").write_text("...")
    with pytest.raises(ValueError, match="holds other files"):
        check_output_folder(tmp_path / "user", is_own=is_own)
    (tmp_path / "user" / "MINE").write_text("")
    assert check_output_folder(tmp_path / "user", is_own=is_own)
