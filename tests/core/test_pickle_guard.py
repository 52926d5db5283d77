"""No code runs through an unpickler unless the user says so: loaders refused by name, and
the guard that watches the unpickler itself while user code runs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from edgepack.core.pickle_guard import (UnpicklingRefused, no_unpickling, pickle_loader,
                                        refuse_pickle_loader)


class Payload:
    """A pickle that creates ``marker`` when it is loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("spec, loader", [
    ("torch:load", "torch.load"), ("torch.serialization:load", "torch.serialization.load"),
    ("torch.jit:load", "torch.jit.load"), ("numpy:load", "numpy.load"),
    ("pandas:read_pickle", "pandas.read_pickle"), ("pickle:loads", "pickle.loads"),
    ("_pickle:load", "_pickle.load"), ("joblib:load", "joblib.load"),
    ("dill:load", "dill.load"), ("cloudpickle:loads", "cloudpickle.loads"),
    ("torch.package:PackageImporter", "torch.package.PackageImporter"),
    ("joblib.numpy_pickle:load", "joblib.numpy_pickle.load"),
])
def test_loaders_of_pickled_data_are_named(spec, loader):
    assert pickle_loader(spec) == loader
    with pytest.raises(UnpicklingRefused, match="--trust-pickle"):
        refuse_pickle_loader(spec, "[model] build")


@pytest.mark.parametrize("spec", ["torch:randn", "numpy:zeros", "edgepack.zoo:mnist1d_cnn",
                                  "my_models:load", "torchvision:load_x", "pickled_nets:net"])
def test_other_builders_are_not_loaders(spec):
    assert pickle_loader(spec) is None


def test_the_guard_stops_a_pickle_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    blob = pickle.dumps(Payload(marker))
    with pytest.raises(UnpicklingRefused, match="model builder 'm:f' tried to unpickle"):
        with no_unpickling("model builder 'm:f'"):
            pickle.loads(blob)
    assert not marker.exists()


def test_the_guard_stops_full_torch_and_numpy_unpickling(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"w": Payload(marker)}, tmp_path / "evil.pt")
    np.save(tmp_path / "evil.npy", np.array([Payload(marker)], dtype=object))
    with no_unpickling("data provider 'd:f'"):
        with pytest.raises(UnpicklingRefused):
            torch.load(tmp_path / "evil.pt", weights_only=False)
        with pytest.raises(UnpicklingRefused):
            np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert not marker.exists()


def test_the_guard_stops_unpickling_in_threads_the_user_code_starts(tmp_path):
    import threading

    marker = tmp_path / "ran"
    blob, caught = pickle.dumps(Payload(marker)), []

    def load():
        try:
            pickle.loads(blob)
        except UnpicklingRefused as exc:
            caught.append(exc)

    with no_unpickling("model builder 'm:f'"):
        worker = threading.Thread(target=load)
        worker.start()
        worker.join()
    assert caught and not marker.exists()


def test_safe_loading_passes_the_guard(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pt")
    with no_unpickling("model builder 'm:f'"):
        state = torch.load(tmp_path / "ok.pt", weights_only=True)
        assert pickle.loads(pickle.dumps([1, "two", 3.0])) == [1, "two", 3.0]  # no globals
    assert torch.equal(state["w"], torch.ones(3))


def test_the_guard_is_off_outside_the_block_and_when_trusted(tmp_path):
    marker = tmp_path / "ran"
    blob = pickle.dumps(Payload(tmp_path / "outside"))
    pickle.loads(blob)                        # no guard: the caller's own business
    with no_unpickling("model builder 'm:f'", trusted=True):
        pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists() and (tmp_path / "outside").exists()
