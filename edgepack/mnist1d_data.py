"""MNIST-1D generated locally, with no torch import (so a worker process starts fast).

``mnist1d.data.make_dataset`` builds each sample in Python (about 0.7 ms a sample), so the
demo's 28,000 samples take some 20 s of one core. :func:`make_many` makes several sets at once:
the largest in a worker process (a plain ``python -c``), the rest here, so a 2-core machine makes them in
about the time of the largest alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger("edgepack")

PARALLEL_FROM = 4_000  # samples in the largest set before a worker process pays for its start

@contextlib.contextmanager
def _numpy_seed(seed: int):
    """make_dataset seeds numpy's global generator; give the caller's state back after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def make_mnist1d(samples: int, seed: int) -> dict[str, np.ndarray]:
    """Generate MNIST-1D locally: ``x`` (N, 40) float32 and ``y`` (N,) int64, 80/20 split."""
    from mnist1d.data import get_dataset_args, make_dataset

    if samples < 10:
        raise ValueError(f"mnist1d: samples must be >= 10, got {samples}")
    args = get_dataset_args()
    args.num_samples = int(samples)
    args.seed = int(seed)
    with _numpy_seed(seed):
        raw = make_dataset(args)
    return {"x": raw["x"].astype(np.float32), "y": raw["y"].astype(np.int64),
            "x_test": raw["x_test"].astype(np.float32), "y_test": raw["y_test"].astype(np.int64)}


def _made_elsewhere(samples: int, seed: int, folder: str) -> subprocess.Popen:
    """Start a plain Python process (no multiprocessing, so the caller's main script is
    never re-run) that makes one set and saves it as .npz in ``folder``."""
    code = ("import sys, numpy; from edgepack.mnist1d_data import make_mnist1d; "
            "numpy.savez(sys.argv[3], **make_mnist1d(int(sys.argv[1]), int(sys.argv[2])))")
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.Popen([sys.executable, "-c", code, str(samples), str(seed),
                             os.path.join(folder, "set.npz")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_many(specs: list[tuple[int, int]]) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """``make_mnist1d(samples, seed)`` for each ``(samples, seed)``; the same arrays whether
    made here or in the worker (each set is seeded by its own seed alone)."""
    specs = sorted(set(specs), reverse=True)   # the largest first: the worker's share
    if len(specs) < 2 or specs[0][0] < PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        return {spec: make_mnist1d(*spec) for spec in specs}
    with tempfile.TemporaryDirectory(prefix="edgepack-mnist1d-") as folder:
        worker = _made_elsewhere(*specs[0], folder)
        try:
            made = {spec: make_mnist1d(*spec) for spec in specs[1:]}
        finally:
            _, err = worker.communicate()
        if worker.returncode == 0:
            with np.load(os.path.join(folder, "set.npz"), allow_pickle=False) as archive:
                made[specs[0]] = {k: archive[k] for k in ("x", "y", "x_test", "y_test")}
        else:  # the same set, made here instead: slower, never different
            log.debug("mnist1d worker failed (%s); making the set here",
                      err.decode(errors="replace").strip().splitlines()[-1:] or "no message")
            made[specs[0]] = make_mnist1d(*specs[0])
    return made
