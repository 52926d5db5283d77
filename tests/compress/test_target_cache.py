"""The teacher's outputs kept for the next run: read back only for the same teacher and
rows, never unpickled, recomputed when damaged, and off unless asked for."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgepack.compress.distill import DistillConfig, distill
from edgepack.compress.target_cache import FOLDER, cached_targets, targets_key


def _models():
    torch.manual_seed(0)
    return (nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8)),
            nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8)))


def _distill(cache: bool):
    teacher, student = _models()
    data = {"train": DataLoader(TensorDataset(torch.randn(256, 6, generator=torch.Generator()
                                                          .manual_seed(1))), batch_size=32)}
    config = DistillConfig(objective="embedding", epochs=2, lr=1e-2, cache_targets=cache)
    return distill(teacher, student, config, data, progress=False)


def test_a_second_run_reads_the_targets_and_trains_the_same_student(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = _distill(cache=True)
    assert first.record["teacher_targets"].startswith("computed in ")
    assert len(list((tmp_path / "edgepack" / FOLDER).glob("*.safetensors"))) == 1
    second = _distill(cache=True)
    assert second.record["teacher_targets"].startswith("cache in ")
    for a, b in zip(first.artifact.state_dict().values(), second.artifact.state_dict().values()):
        assert torch.equal(a, b)


def test_without_the_setting_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _distill(cache=False).record["teacher_targets"].startswith("computed in ")
    assert not (tmp_path / "edgepack" / FOLDER).exists()


def test_the_key_follows_every_weight_and_every_row():
    teacher, _ = _models()
    rows = torch.randn(10, 6)
    key = targets_key(teacher, rows)
    assert targets_key(teacher, rows.clone()) == key
    changed_rows = rows.clone()
    changed_rows[9, 5] += 1e-3
    assert targets_key(teacher, changed_rows) != key
    with torch.no_grad():
        teacher[2].bias[0] += 1e-6
    assert targets_key(teacher, rows) != key


def test_a_damaged_or_mismatched_entry_is_computed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    teacher, _ = _models()
    rows = torch.randn(12, 6)
    calls = []

    def compute():
        calls.append(1)
        return teacher(rows).detach()

    expected, source = cached_targets(teacher, rows, compute)
    assert source == "computed" and len(calls) == 1
    path = tmp_path / "edgepack" / FOLDER / f"{targets_key(teacher, rows)}.safetensors"
    assert torch.equal(cached_targets(teacher, rows, compute)[0], expected) and len(calls) == 1
    path.write_bytes(b"\x80\x04 not a safetensors file")       # a pickle header, never loaded
    found, source = cached_targets(teacher, rows, compute)
    assert source == "computed" and len(calls) == 2 and torch.equal(found, expected)
    from safetensors.torch import save_file

    save_file({"targets": expected[:5].contiguous()}, str(path))     # too few rows
    assert cached_targets(teacher, rows, compute)[1] == "computed" and len(calls) == 3


def test_a_read_only_cache_costs_time_not_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "missing"))
    (tmp_path / "missing").write_text("a file where the cache folder should be")
    teacher, _ = _models()
    rows = torch.randn(4, 6)
    found, source = cached_targets(teacher, rows, lambda: teacher(rows).detach())
    assert source.startswith("computed (cache not written:") and found.shape == (4, 8)
