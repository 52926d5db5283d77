"""GGUF files are checked before transformers reads them: one line naming what is wrong."""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="pip install 'edgepack[llm]'")

from edgepack.export.gguf import check_gguf, gguf_summary  # noqa: E402


def _write_gguf(path, architecture="llama", raw_dtype=None):
    writer = gguf.GGUFWriter(str(path), architecture)
    if raw_dtype is None:
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    else:  # 2 blocks of the raw type's bytes, whatever they hold
        _, size = gguf.GGML_QUANT_SIZES[raw_dtype]
        writer.add_tensor("token_embd.weight", np.zeros((1, 2 * size), np.uint8),
                          raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_readable_file_is_summarised(tmp_path):
    summary = gguf_summary(_write_gguf(tmp_path / "ok.gguf"))
    assert summary == {"architecture": "llama", "tensor_types": {"F32": 1},
                       "unsupported_types": []}


def test_a_complete_file_is_checked_against_the_model_it_describes(tmp_path):
    from tests.export.gguf_files import write_llama_gguf

    summary = check_gguf(write_llama_gguf(tmp_path / "tiny.gguf"))
    assert summary["architecture"] == "llama" and summary["model_type"] == "llama"
    assert summary["tensor_types"] == {"F32": 20}
    assert summary["elements"] > 0


def test_a_file_with_no_model_in_it_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no metadata 'llama.block_count'"):
        check_gguf(_write_gguf(tmp_path / "ok.gguf"))


def test_an_unsupported_tensor_type_is_named(tmp_path):
    path = _write_gguf(tmp_path / "q8k.gguf", raw_dtype=gguf.GGMLQuantizationType.Q8_K)
    assert gguf_summary(path)["unsupported_types"] == ["Q8_K"]
    with pytest.raises(ValueError, match=r"tensor type Q8_K is not supported"):
        check_gguf(path)


def test_an_unknown_architecture_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"architecture 'no-such-arch' is not one"):
        check_gguf(_write_gguf(tmp_path / "arch.gguf", architecture="no-such-arch"))


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a GGUF")
    with pytest.raises(ValueError, match="not a GGUF file"):
        check_gguf(path)
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        check_gguf(tmp_path / "missing.gguf")


def test_export_gguf_refuses_bad_input_in_one_line(tmp_path, capsys):
    from tests.edgepack.helpers import error_line, run_cli

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf at all")
    code, err = run_cli(capsys, "export", "--gguf", fake, "-o", tmp_path / "out")
    assert code == 2 and "is not a GGUF file" in error_line(err)
    code, err = run_cli(capsys, "export", "--gguf", fake, "--task", "feature-extraction",
                        "-o", tmp_path / "out")
    assert code == 2 and "--gguf exports a decoder" in error_line(err)
    code, err = run_cli(capsys, "export", "--gguf", _write_gguf(tmp_path / "q.gguf",
                        raw_dtype=gguf.GGMLQuantizationType.Q8_K), "-o", tmp_path / "out")
    assert code == 2 and "tensor type Q8_K is not supported" in error_line(err)
    assert not (tmp_path / "out").exists()
