"""The teacher is trained once, cached under the user's cache folder, keyed by its config."""

import pytest
import torch

from edgepack.pipeline.recipe import DataSpec, ModelSpec
from edgepack.pipeline.teacher import cache_dir, prepare_teacher, teacher_key
from edgepack.zoo.mnist1d_models import mnist1d

SPEC = ModelSpec(build="edgepack.zoo:mnist1d_cnn", args={"width": 4}, train_epochs=1)
DATA = DataSpec(provider="edgepack.zoo:mnist1d", args={"samples": 300, "transfer_samples": 10})


def test_trained_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = mnist1d(**DATA.args)
    said: list[str] = []
    first = prepare_teacher(SPEC, DATA, data, 0, None, log=said.append, progress=False)
    assert "training" in said[-1]
    second = prepare_teacher(SPEC, DATA, data, 0, None, log=said.append, progress=False)
    assert "from cache" in said[-1]
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    cached = list((cache_dir() / "teachers").iterdir())
    assert [p.name for p in cached] == [teacher_key(SPEC, DATA, 0)]
    assert sorted(p.name for p in cached[0].iterdir()) == ["cache-manifest.json",
                                                           "model.safetensors"]


def test_the_key_changes_with_everything_that_decides_the_weights():
    base = teacher_key(SPEC, DATA, 0)
    assert teacher_key(SPEC, DATA, 1) != base
    assert teacher_key(ModelSpec(**{**SPEC.__dict__, "args": {"width": 8}}), DATA, 0) != base
    assert teacher_key(ModelSpec(**{**SPEC.__dict__, "train_epochs": 2}), DATA, 0) != base
    assert teacher_key(SPEC, DataSpec(DATA.provider, {"samples": 301}), 0) != base
    assert teacher_key(ModelSpec(**{**SPEC.__dict__, "augment": "shift"}), DATA, 0) != base
    assert teacher_key(SPEC, DATA, 0) == base


def test_an_augmented_teacher_trains_on_perturbed_inputs(monkeypatch):
    import torch

    from edgepack.pipeline.teacher import augmented_loss

    seen = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 10))
    model.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    x, y = torch.arange(40.0).reshape(1, 1, 40), torch.zeros(1, dtype=torch.long)
    torch.manual_seed(1)
    for _ in range(8):
        augmented_loss("shift")(model, (x, y))
    augmented_loss("none")(model, (x, y))
    assert any(not torch.equal(s, x) for s in seen[:-1])   # shifted at least once in 8 draws
    assert torch.equal(seen[-1], x)                         # "none": the inputs as given


def _train(said: list[str]):
    return prepare_teacher(SPEC, DATA, mnist1d(**DATA.args), 0, None, log=said.append,
                           progress=False)


def _truncate(entry):
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])


def _swap(entry):
    """Another teacher's entry (another key) moved in under this one's name."""
    other = entry.parent / "other"
    entry.rename(other)
    (other / "model.safetensors").write_bytes(b"")   # what the other entry held does not matter
    import json

    manifest = json.loads((other / "cache-manifest.json").read_text())
    manifest["source"]["teacher"] = "0123456789abcdef"
    (other / "cache-manifest.json").write_text(json.dumps(manifest))
    other.rename(entry)


def _half_made(entry):
    (entry / "cache-manifest.json").unlink()


def _junk(entry):
    import shutil

    shutil.rmtree(entry)
    entry.mkdir()
    (entry / "model.safetensors").write_bytes(b"\x00" * 10)


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory):
    """A cache folder holding the trained teacher, made once for the module."""
    folder = tmp_path_factory.mktemp("trained-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        first = _train([])
    return folder, first


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "bytes, not the"),
    (_swap, "made from another input"),
    (_half_made, "no manifest"),
    (_junk, "no manifest"),
])
def test_a_damaged_cache_entry_is_trained_again_with_one_line(tmp_path, monkeypatch, capsys,
                                                             trained_cache, damage, reason):
    import shutil

    shutil.copytree(trained_cache[0], tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = trained_cache[1]
    entry = cache_dir() / "teachers" / teacher_key(SPEC, DATA, 0)
    damage(entry)
    capsys.readouterr()
    said: list[str] = []
    again = _train(said)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "cache entry" in line]
    assert len(lines) == 1 and reason in lines[0] and "rebuilding" in lines[0], err
    assert "training" in said[-1]
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    said.clear()
    _train(said)
    assert "from cache" in said[-1]


def test_a_teacher_that_diverged_is_refused_and_never_cached(tmp_path, monkeypatch):
    from edgepack.core.errors import CheckFailed

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def diverge(net, *_args, **_kwargs):
        with torch.no_grad():
            next(net.parameters()).fill_(float("nan"))

    monkeypatch.setattr("edgepack.pipeline.teacher.fit", diverge)
    with pytest.raises(CheckFailed, match="diverged: its tensor .* holds NaN or Inf"):
        _train([])
    entry = cache_dir() / "teachers" / teacher_key(SPEC, DATA, 0)
    assert not entry.exists()
