"""A passing int8 model by default on every x86 CPU: when the first candidate fails its
output check, the next ones are tried, cheapest first, and the fastest that passes is handed
back. The ISA is faked by its flags (no test depends on the CPU it runs on), and timings are
injected (no test races the clock)."""

from __future__ import annotations

import pytest

from edgepack.compress.quantize import OutputCheckFailed, quantize
from edgepack.compress.quantize.attempt import Attempt
from edgepack.compress.quantize.candidate_search import fallbacks, first_candidate
from edgepack.compress.quantize.quantizer import resolve_settings
from tests.compress.test_quantize import cfg, labelled, tiny_cnn
from tests.compress.test_quantize_checks import fake_timings
from tests.edgepack.helpers import run_cli_output

ISAS = {  # (arch, CPU flags) -> the preset auto picks, and the dynamic search order after it
    "avx2": (("x86_64", {"avx2", "fma"}), "x86-avx2",
             ["full 8-bit weights (no reduce-range)",
              "sensitive nodes kept in float (accuracy-aware)",
              "static int8, calibrated on the given data"]),
    "avx512-vnni": (("x86_64", {"avx2", "avx512f", "avx512_vnni"}), "x86-vnni",
                    ["7-bit weights (reduce-range)",
                     "sensitive nodes kept in float (accuracy-aware)",
                     "static int8, calibrated on the given data"]),
    "amx": (("x86_64", {"avx2", "avx512_vnni", "amx_tile", "amx_int8"}), "x86-amx",
            ["7-bit weights (reduce-range)", "sensitive nodes kept in float (accuracy-aware)",
             "static int8, calibrated on the given data"]),
    "arm64-dotprod": (("arm64", {"asimd", "asimddp"}), "arm64",
                      ["7-bit weights (reduce-range)",
                       "sensitive nodes kept in float (accuracy-aware)",
                       "static int8, calibrated on the given data"]),
}


@pytest.fixture
def fake_cpu(monkeypatch):
    from edgepack.compress.quantize import presets

    def pretend(arch, flags):
        monkeypatch.setattr(presets, "machine_arch", lambda: arch)
        monkeypatch.setattr(presets, "cpu_flags", lambda: frozenset(flags))
    return pretend


@pytest.mark.parametrize("isa", ISAS)
def test_each_isa_gets_its_preset_and_its_search_order(fake_cpu, isa):
    (arch, flags), preset, order = ISAS[isa]
    fake_cpu(arch, flags)
    config = cfg(mode="dynamic")
    settings, why = resolve_settings(config)
    assert why.startswith(preset)
    assert first_candidate(config, settings, why).label == f"as asked (preset {preset})"
    assert [c.label for c in fallbacks(config, settings, has_calibration=True)] == order


def test_per_tensor_weights_are_tried_per_channel_first(fake_cpu):
    fake_cpu("x86_64", {"avx2", "avx512_vnni"})
    config = cfg(mode="dynamic", per_channel=False)
    settings, _ = resolve_settings(config)
    labels = [c.label for c in fallbacks(config, settings, has_calibration=False)]
    assert labels == ["per-channel weights", "7-bit weights (reduce-range)",
                      "sensitive nodes kept in float (accuracy-aware)"]


def _failing_first(monkeypatch, failing=("as asked",)):
    """The output check fails for the candidates whose label starts with ``failing``."""
    real = Attempt.output_check

    def output_check(self, candidate):
        if self.candidate_spec.label.startswith(failing):
            self.record["output_check"] = {"outputs": {"y": {"mean_cosine": 0.5}},
                                           "failures": ["output 'y': mean cosine 0.5 < 0.99"],
                                           "passed": False}
            raise OutputCheckFailed("the quantized model's outputs differ (forced)",
                                    {"failures": ["output 'y': mean cosine 0.5 < 0.99"]})
        return real(self, candidate)
    monkeypatch.setattr(Attempt, "output_check", output_check)


def test_when_the_first_candidate_fails_the_next_one_is_handed_back(tmp_path, fake_cpu,
                                                                   monkeypatch):
    fake_cpu("x86_64", {"avx2", "avx512_vnni"})
    _failing_first(monkeypatch, failing=("as asked", "static"))
    model = tiny_cnn(tmp_path / "cnn.onnx")
    x, _ = labelled(model, 96, (1, 16))
    result = quantize(model, cfg(mode="dynamic", accuracy_aware=False), tmp_path / "q.onnx",
                      calibration={"x": x})
    search = result.record["candidate_search"]
    assert search["chosen"] == "7-bit weights (reduce-range)"
    assert result.record["reduce_range"] is True and result.record["mode"] == "dynamic"
    assert result.record["requested"]["reduce_range"] is None   # asked: the preset's choice
    assert search["candidates"][0]["verdict"].startswith("failed the output check")
    assert "as asked (preset x86-vnni): failed the output check" in search["why"]


def test_the_fastest_passing_candidate_wins(tmp_path, fake_cpu, monkeypatch):
    fake_cpu("x86_64", {"avx2", "fma"})
    _failing_first(monkeypatch, failing=("as asked", "full 8-bit"))
    # timed: the input, the accuracy-aware candidate, static int8: static is fastest here
    monkeypatch.setattr(sys_module("edgepack.compress.quantize.candidate_search"), "time_models",
                        fake_timings([1.0, 0.8, 0.5]))
    model = tiny_cnn(tmp_path / "cnn.onnx")
    x, _ = labelled(model, 96, (1, 16))
    result = quantize(model, cfg(mode="dynamic"), tmp_path / "q.onnx", calibration={"x": x})
    search = result.record["candidate_search"]
    assert search["chosen"] == "static int8, calibrated on the given data"
    assert result.record["mode"] == "static"
    slower = next(c for c in search["candidates"] if c["label"].startswith("sensitive"))
    assert slower["verdict"] == "passed, but slower" and slower["speedup"] == 1.25
    assert "at 2.00x its input" in search["why"]


def test_none_passing_is_refused_naming_the_best_figure(tmp_path, fake_cpu, monkeypatch):
    fake_cpu("x86_64", {"avx2", "avx512_vnni"})
    _failing_first(monkeypatch, failing=("as asked", "7-bit", "static"))
    model = tiny_cnn(tmp_path / "cnn.onnx")
    x, _ = labelled(model, 96, (1, 16))
    with pytest.raises(OutputCheckFailed, match=r"no candidate passed the output check \(3 "
                                                r"tried.*the best was") as info:
        quantize(model, cfg(mode="dynamic", accuracy_aware=False), tmp_path / "q.onnx",
                 calibration={"x": x}, keep_failed=tmp_path / "kept.onnx")
    assert len(info.value.figures["candidates"]) == 3
    assert not (tmp_path / "q.onnx").exists() and (tmp_path / "kept.onnx").exists()


def test_no_search_keeps_the_single_shot(tmp_path, fake_cpu, monkeypatch, capsys):
    import numpy as np

    fake_cpu("x86_64", {"avx2", "avx512_vnni"})
    _failing_first(monkeypatch)
    model = tiny_cnn(tmp_path / "cnn.onnx")
    np.savez(tmp_path / "calib.npz", x=labelled(model, 96, (1, 16))[0])
    argv = ["quantize", model, "-o", tmp_path / "q.onnx", "--mode", "dynamic", "--data",
            tmp_path / "calib.npz", "--no-speed-check", "--no-latency-aware"]
    code, out, err = run_cli_output(capsys, *argv, "--no-search")
    assert code == 1 and "forced" in err and not (tmp_path / "q.onnx").exists()
    code, out, err = run_cli_output(capsys, *argv)
    assert code == 0 and "search: the first candidate failed its output check" in out
    assert "kept: " in out and "as asked (preset x86-vnni)" in out


def sys_module(name):
    import sys

    return sys.modules[name]


def test_a_text_model_without_data_is_checked_on_sentences(tmp_path):
    """A tokenizer.json beside a token model: the output check runs on real sentences
    tokenized with it, not on random ids (which are no text)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    from edgepack.compress.quantize.text_inputs import SENTENCES, sentence_batches
    from tests.bench.conftest import token_model

    model = token_model(tmp_path / "tok.onnx", vocab=50)
    vocabulary = sorted({w for s in SENTENCES for w in s.split()})
    words = {w: i % 49 + 1 for i, w in enumerate(vocabulary)}
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0, **words}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    [feeds] = sentence_batches(model, session, rows=4)
    assert set(feeds) == {"input_ids", "attention_mask"} and feeds["input_ids"].shape[0] == 4
    assert feeds["attention_mask"].sum(1).tolist() == [
        len(tokenizer.encode(s).ids) for s in SENTENCES[:4]]
    result = quantize(model, cfg(mode="dynamic", min_cosine=-1.0, max_norm_change=10.0,
                                 min_top1_agreement=0.0), tmp_path / "q.onnx")
    assert result.record["held_out"]["source"].startswith("built-in English sentences")
    (tmp_path / "tokenizer.json").unlink()
    again = quantize(model, cfg(mode="dynamic", min_cosine=-1.0, max_norm_change=10.0,
                                min_top1_agreement=0.0), tmp_path / "q2.onnx")
    assert again.record["held_out"]["source"].startswith("generated inputs")
