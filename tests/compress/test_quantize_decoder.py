"""The decoder quantize stage on a tiny Llama: every candidate judged and recorded, the gate
refuses, the fastest passing one is kept. Timings are faked in every test (an autouse
fixture): no verdict depends on which candidate a probe favours on a loaded machine."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.compress.quantize import decoder_quantize
from edgepack.bench.lm_quality import LMGate
from edgepack.compress.quantize.decoder_candidates import (default_decoder_candidates, int4,
                                                           int8_dynamic, quantization_key)
from edgepack.compress.quantize.decoder_quantize import quantize_decoder
from edgepack.compress.quantize.quantize_config import QuantizationCheckError
from edgepack.core.output_paths import written_by_edgepack
from tests.decoder_timing import accuracy_level as _level
from tests.decoder_timing import fake_search_timing, fake_timing as _fake_timing

LOOSE = LMGate(max_perplexity_ratio=10.0, min_top1_agreement=0.0)


@pytest.fixture(scope="module")
def texts():
    rng = np.random.default_rng(0)
    windows = rng.integers(3, 300, size=(3, 24)).tolist()
    return {"eval_windows": windows, "prompts": [w[:6] for w in windows[:2]],
            "new_tokens": 4, "rounds": 1}


@pytest.fixture(autouse=True)
def neutral_timing(monkeypatch):
    """Every quantized candidate faster than its input, unless a test says otherwise."""
    fake_search_timing(monkeypatch)


def test_the_fastest_passing_candidate_is_kept_and_every_one_recorded(
        tiny_decoder, tmp_path, texts, monkeypatch):
    _, source = tiny_decoder
    monkeypatch.setattr(decoder_quantize, "_generation_stats",
                        _fake_timing({-1: 10.0, 0: 20.0, 4: 30.0}))
    candidates = [int4("rtn", 32, False, 0), int4("rtn", 32, False, 4)]
    out = tmp_path / "q.onnx"
    result = quantize_decoder(source, out, candidates=candidates, gate=LOOSE, **texts)
    record = result.record
    assert result.artifact == out and written_by_edgepack(out) and _level(out) == 4
    assert record["chosen"] == candidates[1].label
    entries = {e["label"]: e for e in record["candidates"]}
    assert list(entries) == [c.label for c in candidates]
    assert entries[candidates[1].label]["verdict"] == "chosen"
    assert entries[candidates[0].label]["verdict"] == "passed, but slower"
    for entry in entries.values():
        assert {"size_bytes", "perplexity", "perplexity_ratio", "top1_agreement",
                "greedy_agreement", "decode_tokens_per_s", "speedup"} <= set(entry)
    assert entries[candidates[1].label]["speedup"] == pytest.approx(3.0)
    assert record["input"]["decode_tokens_per_s"] == 10.0
    assert record["size_bytes"] < record["size_bytes_before"]
    assert candidates[0].label in record["why"]


def test_a_strict_gate_refuses_naming_the_best_figure_and_keeps_it_if_asked(
        tiny_decoder, tmp_path, texts):
    _, source = tiny_decoder
    strict = LMGate(max_perplexity_ratio=1.0, min_top1_agreement=1.0)
    kept = tmp_path / "refused.onnx"
    with pytest.raises(QuantizationCheckError) as caught:
        quantize_decoder(source, tmp_path / "q.onnx", candidates=[int4("rtn", 32, True, 0),
                                                                  int8_dynamic()],
                         gate=strict, keep_failed=kept, **texts)
    message = str(caught.value)
    assert "no candidate passed the quality gate" in message
    assert "the best was" in message and "perplexity ratio" in message
    assert caught.value.exit_code == 1
    assert not (tmp_path / "q.onnx").exists()
    assert kept.is_file() and written_by_edgepack(kept)
    verdicts = [e["verdict"] for e in caught.value.figures["candidates"]]
    assert verdicts == ["failed the quality gate"] * 2


def test_a_candidate_not_faster_than_its_input_is_never_chosen(tiny_decoder, tmp_path, texts,
                                                               monkeypatch):
    _, source = tiny_decoder
    monkeypatch.setattr(decoder_quantize, "_generation_stats",
                        _fake_timing({-1: 10.0, 0: 9.0, 4: 10.0}))
    with pytest.raises(QuantizationCheckError, match="none is faster than the input"):
        quantize_decoder(source, tmp_path / "q.onnx",
                         candidates=[int4("rtn", 32, False, 0), int4("rtn", 32, False, 4)],
                         gate=LOOSE, **texts)
    assert not (tmp_path / "q.onnx").exists()


def test_gptq_without_calibration_windows_is_recorded_as_not_made(tiny_decoder, tmp_path,
                                                                  texts, monkeypatch):
    _, source = tiny_decoder
    monkeypatch.setattr(decoder_quantize, "_generation_stats",
                        _fake_timing({-1: 10.0, 0: 20.0, 4: 30.0}))
    gptq = int4("gptq", 32, True, 4)
    result = quantize_decoder(source, tmp_path / "q.onnx",
                              candidates=[gptq, int4("rtn", 32, False, 0)], gate=LOOSE, **texts)
    entry = result.record["candidates"][0]
    assert entry["verdict"] == "not made" and "calibration windows" in entry["why"]
    with_windows = quantize_decoder(source, tmp_path / "g.onnx", candidates=[gptq], gate=LOOSE,
                                    calibration_windows=texts["eval_windows"][:2], **texts)
    assert with_windows.record["chosen"] == gptq.label
    assert with_windows.record["evaluation"]["calibration_windows"] == 2


def test_the_output_may_not_be_the_input(tiny_decoder, texts):
    _, source = tiny_decoder
    with pytest.raises(ValueError, match="replace your input"):
        quantize_decoder(source, source, **texts)


def test_the_default_grid_holds_int8_and_shares_quantizations_across_accuracy_levels():
    grid = default_decoder_candidates()
    assert grid[-1].method == "dynamic"
    int4s = [c for c in grid if c.method == "int4"]
    assert {c.settings.accuracy_level for c in int4s} == {0, 4}
    assert {c.settings.algorithm for c in int4s} == {"rtn", "offset"}
    four_bit = [c for c in int4s if c.settings.bits == 4]
    assert len({quantization_key(c) for c in four_bit}) == len(four_bit) // 2
    assert all(c.settings.quantize_embedding for c in int4s)
    assert {c.settings.bits for c in int4s} == {4, 8}


@pytest.mark.parametrize("fields,message", [
    ({"max_perplexity_ratio": 0.9}, "max_perplexity_ratio must be >= 1.0"),
    ({"min_top1_agreement": 1.5}, "min_top1_agreement must be between 0 and 1"),
])
def test_bad_gates_are_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        LMGate(**fields)


def test_a_candidate_far_beyond_the_gate_is_refused_after_a_first_look(tiny_decoder, tmp_path):
    _, source = tiny_decoder
    windows = np.random.default_rng(1).integers(3, 300, size=(8, 16)).tolist()
    strict = LMGate(max_perplexity_ratio=1.001, min_top1_agreement=0.99)
    with pytest.raises(QuantizationCheckError) as caught:
        quantize_decoder(source, tmp_path / "q.onnx", eval_windows=windows,
                         prompts=[windows[0][:4]], candidates=[int4("rtn", 32, True, 0)],
                         gate=strict, new_tokens=2, rounds=1)
    entry = caught.value.figures["candidates"][0]
    assert entry["judged_windows"] == 2 and "not judged further" in entry["why"]


def test_the_command_line_quantizes_a_decoder_on_built_in_sentences(tiny_decoder, tmp_path,
                                                                   capsys, monkeypatch):
    from tests.edgepack.helpers import run_cli_output

    _, source = tiny_decoder
    import sys

    monkeypatch.setattr(sys.modules["edgepack.compress.quantize.decoder_candidates"],
                        "default_decoder_candidates", lambda: [int4("rtn", 32, False, 0), int4("rtn", 32, False, 4),
                                 int4("rtn", 32, False, 4, bits=8), int8_dynamic()])
    out = tmp_path / "deploy" / "q.onnx"
    code, printed, _ = run_cli_output(capsys, "quantize", source, "-o", out, "--mode", "int4",
                                      "--max-perplexity-ratio", "2", "--min-top1-agreement",
                                      "0")
    assert code == 0 and out.is_file(), printed
    assert "windows of built-in sentences" in printed and "2 candidates" in printed
    assert "int8" not in printed and "8-bit blocks" not in printed   # --mode int4: 4 bits
    assert {"genai_config.json", "tokenizer.json"} <= {p.name for p in out.parent.iterdir()}


def _int4_settings(path) -> list[tuple]:
    import onnx

    return [(next((a.i for a in n.attribute if a.name == "block_size"), None),
             next((a.i for a in n.attribute if a.name == "accuracy_level"), 0), len(n.input))
            for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"]


@pytest.mark.parametrize("flags, block, level, inputs, how", [
    (["--block-size", "64"], 64, 4, None, "with bits = 4, block_size = 64"),
    (["--block-size", "32", "--algorithm", "rtn", "--symmetric", "--accuracy-level", "0"],
     32, 0, 3, "with accuracy_level = 0"),
    (["--block-size", "16", "--no-search"], 16, 0, 4, "the settings given (--no-search)"),
])
def test_int4_flags_constrain_the_candidates_and_the_file_obeys(tiny_decoder, tmp_path, capsys,
                                                               monkeypatch, flags, block, level,
                                                               inputs, how):
    """Each flag given holds every candidate to it; the file written has those settings."""
    from tests.edgepack.helpers import run_cli_output

    _, source = tiny_decoder
    fake_search_timing(monkeypatch, {-1: 10.0, 0: 20.0, 4: 30.0})
    out = tmp_path / "q" / "model.onnx"
    code, printed, _ = run_cli_output(capsys, "quantize", source, "-o", out, "--mode", "int4",
                                      "--max-perplexity-ratio", "2", "--min-top1-agreement",
                                      "0", *flags)
    assert code == 0, printed
    assert how in printed
    settings = set(_int4_settings(out))
    assert {(b, lv) for b, lv, _ in settings} == {(block, level)}
    assert inputs is None or {n for _, _, n in settings} == {inputs}   # 3: symmetric


@pytest.mark.parametrize("flags, message", [
    (["--mode", "int4", "--min-cosine", "0.5"], "--min-cosine does not apply"),
    (["--mode", "static"], "--mode static is not one of them"),
    (["--mode", "dynamic", "--accuracy-aware"], "--accuracy-aware does not apply"),
    (["--mode", "int4", "--data", "{data}"], "'gptq' and 'imatrix' candidates read calibration"),
    (["--mode", "int4", "--block-size", "24"], "block_size must be a power of two"),
])
def test_decoder_flags_that_do_not_apply_are_refused(tiny_decoder, tmp_path, capsys, flags,
                                                    message):
    from tests.edgepack.helpers import error_line, run_cli

    _, source = tiny_decoder
    data = tmp_path / "calib.npz"
    np.savez(data, input_ids=np.ones((2, 8), np.int64))
    argv = [f.format(data=data) for f in flags]
    code, err = run_cli(capsys, "quantize", source, "-o", tmp_path / "q.onnx", *argv)
    assert code == 2 and message in error_line(err)
    assert not (tmp_path / "q.onnx").exists()


def test_an_output_beside_its_input_leaves_the_inputs_deploy_files_alone(tiny_decoder, tmp_path,
                                                                         capsys):
    """The input folder's genai_config.json names the input model: it is not rewritten."""
    import shutil

    from tests.edgepack.helpers import run_cli_output

    _, source = tiny_decoder
    folder = tmp_path / "model"
    shutil.copytree(source.parent, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, printed, _ = run_cli_output(capsys, "quantize", folder / "model.onnx", "-o",
                                      folder / "model.int4.onnx", "--mode", "int4",
                                      "--no-search", "--max-perplexity-ratio", "2",
                                      "--min-top1-agreement", "0")
    assert code == 0, printed
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before


def test_a_candidate_far_slower_on_the_probe_is_not_judged(tiny_decoder, tmp_path, texts,
                                                            monkeypatch):
    _, source = tiny_decoder
    monkeypatch.setattr(decoder_quantize, "_generation_stats",
                        _fake_timing({-1: 10.0, 0: 2.0, 4: 30.0}))   # level 0: 0.2x
    candidates = [int4("rtn", 32, False, 0), int4("rtn", 32, False, 4)]
    result = quantize_decoder(source, tmp_path / "q.onnx", candidates=candidates, gate=LOOSE,
                              **texts)
    slow, fast = result.record["candidates"]
    assert slow["verdict"] == "slower than the input on a first probe"
    assert slow["probe_speedup"] == pytest.approx(0.2) and "perplexity" not in slow
    assert "quality not judged" in slow["why"]
    assert fast["verdict"] == "chosen" and fast["probe_speedup"] == pytest.approx(3.0)


def test_the_gate_comes_from_any_object_with_its_thresholds():
    """The recipe's language-model settings reach the search as a plain gate: an LMGate
    subclass with more fields, or any object with the three thresholds."""
    import dataclasses
    import types

    from edgepack.compress.quantize.decoder_quantize_stage import gate_from_metric

    @dataclasses.dataclass(frozen=True)
    class Metric(LMGate):
        rounds: int = 3

    thresholds = {"max_perplexity_ratio": 1.5, "min_top1_agreement": 0.7,
                  "min_greedy_agreement": 0.1}
    for metric in (Metric(**thresholds), types.SimpleNamespace(**thresholds)):
        gate = gate_from_metric(metric)
        assert type(gate) is LMGate and dataclasses.asdict(gate) == thresholds
    assert gate_from_metric(None) == LMGate()
    assert gate_from_metric(types.SimpleNamespace(kind="accuracy", **thresholds)) == LMGate()
