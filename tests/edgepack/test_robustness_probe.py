"""The pipeline's per-stage robustness probe: attacks plus attribution drift vs the teacher."""

import copy

import pytest
import torch

from edgepack.bench.robustness import RobustnessConfig
from edgepack.pipeline.robustness_probe import RobustnessProbe
from tests.bench.conftest import token_model
from tests.bench.robust_models import eval_arrays, export_tiny, quantize_tiny, trained_tiny

CONFIG = RobustnessConfig(eps=(0.2,), samples=64, query_budget=20, pgd_steps=3,
                          attribution_samples=32, attribution_threshold=0.8)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    x, y = eval_arrays(128)
    teacher_onnx = export_tiny(trained_tiny(), folder / "teacher.onnx")
    return RobustnessProbe(CONFIG, x, y, trained_tiny(), teacher_onnx), folder


def test_the_teacher_against_itself_is_not_drifted(probe):
    probe, _ = probe
    out = probe.measure(probe.teacher_onnx, module=trained_tiny(), source=trained_tiny())
    assert out["attribution"]["rho"] == pytest.approx(1.0)
    assert out["attribution"]["flagged"] is False
    assert out["robustness"]["crafted_on"] == "the model itself"
    assert {"noise", "fgsm", "pgd", "square"} <= set(out["robustness"])


def test_an_onnx_only_stage_is_compared_by_occlusion_and_attacked_by_transfer(probe):
    probe, folder = probe
    int8 = quantize_tiny(probe.teacher_onnx, folder / "teacher.int8.onnx")
    out = probe.measure(int8, module=None, source=trained_tiny())
    assert out["attribution"]["method"] == "occlusion"
    assert 0.5 < out["attribution"]["rho"] <= 1.0    # int8 keeps where the model looks
    assert out["robustness"]["crafted_on"] == "its torch parent"


def test_a_model_that_looks_elsewhere_is_flagged(probe):
    probe, folder = probe
    other = copy.deepcopy(trained_tiny())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(p.std() * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    out = probe.measure(export_tiny(other, folder / "other.onnx"), module=other, source=other)
    assert out["attribution"]["rho"] < CONFIG.attribution_threshold
    assert out["attribution"]["flagged"] is True


def test_token_models_are_not_applicable(probe, tmp_path):
    probe, _ = probe
    out = probe.measure(token_model(tmp_path / "tok.onnx"))
    assert out == {"robustness": {"applicable": False, "reason": out["robustness"]["reason"]}}


def test_the_same_file_from_the_same_weights_is_attacked_once(probe, tmp_path):
    """The export stage's file is the previous stage's scratch export, byte for byte: its
    attacks are not run again, and give the same figures."""
    import shutil

    probe, folder = probe
    probe = RobustnessProbe(CONFIG, probe.inputs, probe.labels, probe.teacher,
                            probe.teacher_onnx)     # nothing attacked yet
    model = trained_tiny()
    first = probe.measure(export_tiny(model, folder / "scratch.onnx"), module=model,
                          source=model)["robustness"]
    copied = shutil.copy(folder / "scratch.onnx", tmp_path / "exported.onnx")
    again = probe.measure(copied, module=None, source=copy.deepcopy(model))["robustness"]
    assert again["reused"] is True and "reused" not in first
    figures = ("clean", "noise", "fgsm", "pgd", "square", "queries")
    assert {k: again[k] for k in figures} == {k: first[k] for k in figures}
    assert again["crafted_on"] == "its torch parent"
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert "reused" not in probe.measure(copied, module=None, source=other)["robustness"]



def test_a_rerun_reads_the_attacks_back_from_the_cache_folder(probe, tmp_path):
    """Seeded attacks on the same bytes from the same weights give the same figures: a second
    run (a fresh probe, as a new process would make) reads them back, marked cached."""
    probe, folder = probe
    model = trained_tiny()
    path = export_tiny(model, folder / "cached.onnx")

    def fresh_probe():
        return RobustnessProbe(CONFIG, probe.inputs, probe.labels, probe.teacher,
                               probe.teacher_onnx, cache_folder=tmp_path / "cache")

    first = fresh_probe().measure(path, module=model, source=model)["robustness"]
    again = fresh_probe().measure(path, module=model, source=model)["robustness"]
    assert "cached" not in first and again["cached"] is True and again["seconds"] == 0.0
    figures = ("clean", "noise", "fgsm", "pgd", "square", "queries")
    assert {k: again[k] for k in figures} == {k: first[k] for k in figures}
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)   # other weights: another key, attacked afresh
    assert "cached" not in fresh_probe().measure(path, module=None, source=other)["robustness"]
    for entry in (tmp_path / "cache").glob("*.json"):
        entry.write_text("{not json")         # a damaged entry is measured again
    assert "cached" not in fresh_probe().measure(path, module=model, source=model)["robustness"]
