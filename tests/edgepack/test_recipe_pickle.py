"""A recipe never reaches an unpickler unless the user passes --trust-pickle: loaders of
pickled data are refused by name before import (whatever --allow-any-builder says), and a
user's builder that unpickles is stopped by the guard before the payload runs."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
import torch

from tests.edgepack.helpers import error_line, run_cli


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def recipe(folder, build: str, args: str = "{}", provider: str = "") -> str:
    data = f'[data]\nprovider = "{provider}"\n' if provider else ""
    path = folder / "recipe.toml"
    path.write_text(textwrap.dedent(f'''
        name = "r"
        [model]
        build = "{build}"
        args = {args}
        ''') + data + '[[stages]]\nkind = "export"\n')
    return path


@pytest.fixture
def evil(tmp_path):
    """A pickle that creates ``ran`` when loaded, as .pt and as .npy."""
    torch.save({"w": Payload(tmp_path / "ran")}, tmp_path / "evil.pt")
    np.save(tmp_path / "evil.npy", np.array([Payload(tmp_path / "ran")], dtype=object))
    return tmp_path


@pytest.mark.parametrize("build, args", [
    ("torch:load", '{ f = "evil.pt", weights_only = false }'),
    ("numpy:load", '{ file = "evil.npy", allow_pickle = true }'),
    ("torch.serialization:load", '{ f = "evil.pt", weights_only = false }'),
    ("pandas:read_pickle", '{ filepath_or_buffer = "evil.pt" }'),
    ("joblib:load", '{ filename = "evil.pt" }'),
    ("pickle:loads", "{}"),
    ("dill:load", "{}"),
    ("torch.jit:load", '{ f = "evil.pt" }'),
])
@pytest.mark.parametrize("allow_any", [False, True])
def test_a_loader_of_pickled_data_is_refused_by_name(evil, capsys, monkeypatch, build, args,
                                                      allow_any):
    monkeypatch.chdir(evil)
    flags = ["--allow-any-builder"] if allow_any else []
    code, err = run_cli(capsys, "run", recipe(evil, build, args), "--out", evil / "out", *flags)
    assert code == 2 and "--trust-pickle" in error_line(err) and "unpickl" in err
    assert not (evil / "ran").exists() and not (evil / "out").exists()


def test_a_data_provider_that_is_a_loader_is_refused(evil, capsys, monkeypatch):
    monkeypatch.chdir(evil)
    path = recipe(evil, "edgepack.zoo:mnist1d_cnn", provider="numpy:load")
    code, err = run_cli(capsys, "run", path, "--out", evil / "out")
    assert code == 2 and "[data] provider 'numpy:load' is numpy.load" in error_line(err)


def test_a_builder_that_unpickles_is_stopped_before_the_payload_runs(evil, capsys,
                                                                     monkeypatch):
    (evil / "wrapped_loader.py").write_text(
        "import torch\n\ndef net():\n    return torch.load('evil.pt', weights_only=False)\n")
    monkeypatch.chdir(evil)
    code, err = run_cli(capsys, "run", recipe(evil, "wrapped_loader:net"), "--out", evil / "out")
    line = error_line(err)
    assert code == 2 and "model builder 'wrapped_loader:net' tried to unpickle" in line
    assert "posix.system" in line or "os.system" in line
    assert not (evil / "ran").exists() and not (evil / "out").exists()


def test_a_data_provider_that_unpickles_is_stopped(evil, capsys, monkeypatch):
    (evil / "pickled_data.py").write_text(
        "import numpy\n\ndef data():\n    return numpy.load('evil.npy', allow_pickle=True)\n")
    monkeypatch.chdir(evil)
    path = recipe(evil, "edgepack.zoo:mnist1d_cnn", "{ width = 4 }", provider="pickled_data:data")
    code, err = run_cli(capsys, "run", path, "--out", evil / "out")
    assert code == 2 and "data provider 'pickled_data:data' tried to unpickle" in error_line(err)
    assert not (evil / "ran").exists()


def test_export_refuses_a_pickle_loader_as_its_model(evil, capsys, monkeypatch):
    monkeypatch.chdir(evil)
    code, err = run_cli(capsys, "export", "--model", "torch:load", "--args",
                        '{"f": "evil.pt", "weights_only": false}', "--input-shape", "1,4",
                        "-o", evil / "m.onnx", "--allow-any-builder")
    assert code == 2 and "--trust-pickle" in error_line(err)
    assert not (evil / "ran").exists() and not (evil / "m.onnx").exists()


def test_trust_pickle_is_the_one_way_through(evil, capsys, monkeypatch):
    """The user vouches: the loader runs (and the run then fails on what it returned)."""
    monkeypatch.chdir(evil)
    path = recipe(evil, "torch:load", '{ f = "evil.pt", weights_only = false }')
    code, err = run_cli(capsys, "run", path, "--out", evil / "out", "--trust-pickle")
    assert code == 2 and "returned dict, expected a torch.nn.Module" in error_line(err)
    assert (evil / "ran").exists()
    from edgepack.pipeline.user_code import TRUST

    assert not TRUST.pickle and not TRUST.any_builder   # the trust ended with the command
