"""The teacher is trained once, cached under the user's cache folder, keyed by its config."""

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
    assert [p.name for p in cached] == [f"{teacher_key(SPEC, DATA, 0)}.safetensors"]


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


def test_a_damaged_cache_entry_is_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = cache_dir() / "teachers"
    folder.mkdir(parents=True)
    (folder / f"{teacher_key(SPEC, DATA, 0)}.safetensors").write_bytes(b"\x00" * 10)
    said: list[str] = []
    prepare_teacher(SPEC, DATA, mnist1d(**DATA.args), 0, None, log=said.append, progress=False)
    assert any("damaged" in line for line in said) and "training" in said[-1]
