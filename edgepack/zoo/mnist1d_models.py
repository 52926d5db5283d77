"""Built-in models and data for the demo and the tests: MNIST-1D, made locally.

MNIST-1D (Greydanus 2020) is a 1-D analogue of MNIST: 40-sample signals of ten digit
templates, shifted, scaled, sheared and noised. It is generated here by
``mnist1d.data.make_dataset`` (never ``get_dataset``, which downloads), so the demo runs
offline, and it is hard enough that a small CNN and a tiny one differ by a few points.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgepack.zoo import mnist1d_data
from edgepack.zoo.mnist1d_data import make_mnist1d

SIGNAL_LENGTH = 40
CLASSES = 10


def mnist1d_cnn(width: int = 64, length: int = SIGNAL_LENGTH, classes: int = CLASSES) -> nn.Module:
    """Three 1-D convolutions (the last two with stride 2) and a linear head.

    ``width=64`` has 31,498 parameters; ``width=16`` has 3,274 (9.6x fewer).
    """
    if width < 1:
        raise ValueError(f"mnist1d_cnn: width must be >= 1, got {width}")
    reduced = length // 4
    return nn.Sequential(
        nn.Conv1d(1, width, 5, padding=2), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(width * reduced, classes),
    )


class BasicBlock(nn.Module):
    """A ResNet basic block: two 3x3 convolutions with batch norm and a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet_cnn(width: int = 32, blocks: int = 3, classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A CIFAR-style ResNet (three stages of ``blocks`` basic blocks), for 32x32 images."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for stage, mult in enumerate((1, 2, 4)):
        for b in range(blocks):
            layers.append(BasicBlock(cin, width * mult, 2 if stage and b == 0 else 1))
            cin = width * mult
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def _cache_path(samples: int, seed: int):
    from edgepack.pipeline.teacher import cache_dir

    return cache_dir() / "data" / f"mnist1d-n{samples}-seed{seed}.npz"


def _read_cached(samples: int, seed: int) -> dict[str, np.ndarray] | None:
    path = _cache_path(samples, seed)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in ("x", "y", "x_test", "y_test")}
    except Exception:
        return None  # a damaged cache entry is simply made again


def _write_cached(samples: int, seed: int, data: dict[str, np.ndarray]) -> None:
    from edgepack.core.files import atomic_path

    try:
        with atomic_path(_cache_path(samples, seed)) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **data)
    except (OSError, ValueError):
        pass  # a read-only cache folder only costs time


def cached_mnist1d(samples: int, seed: int, cache: bool = True) -> dict[str, np.ndarray]:
    """MNIST-1D from the cache folder when made before (plain .npz, no pickle)."""
    data = _read_cached(samples, seed) if cache else None
    if data is None:
        data = make_mnist1d(samples, seed)
        if cache:
            _write_cached(samples, seed, data)
    return data


class TransferSet:
    """Unlabelled MNIST-1D inputs for distillation, made on first use only.

    With ``background=True`` a large set not cached yet starts being made at once in a
    worker process (see :mod:`edgepack.zoo.mnist1d_data`), and first use waits for it.
    """

    def __init__(self, samples: int, seed: int, batch_size: int, background: bool = False):
        self.samples, self.seed, self.batch_size = samples, seed, batch_size
        self._inputs: torch.Tensor | None = None
        self._worker = None
        if (background and samples >= mnist1d_data.BACKGROUND_FROM
                and (os.cpu_count() or 1) >= 2 and _read_cached(samples, seed) is None):
            self._worker = mnist1d_data.start_making(samples, seed, _cache_path(samples, seed))

    def _load(self) -> torch.Tensor:
        if self._inputs is None:
            if self._worker is not None:
                data = mnist1d_data.finish_making(self._worker, self.samples, self.seed,
                                                  _cache_path(self.samples, self.seed))
                self._worker = None
            else:
                data = cached_mnist1d(self.samples, self.seed)
            x = np.concatenate([data["x"], data["x_test"]])
            self._inputs = torch.from_numpy(x).unsqueeze(1)
        return self._inputs

    def __len__(self) -> int:
        return -(-self.samples // self.batch_size)

    def __iter__(self):
        inputs = self._load()
        for start in range(0, len(inputs), self.batch_size):
            yield inputs[start:start + self.batch_size]


def mnist1d(samples: int = 10_000, seed: int = 42, batch_size: int = 128,
            calibration_samples: int = 512, transfer_samples: int = 0,
            transfer_seed: int = 1_000, validation_samples: int = 2_000,
            validation_seed: int = 2_000, non_member_samples: int = 0,
            non_member_seed: int = 3_000, reference_sets: int = 0,
            reference_seed: int = 4_000, calibration_seed: int = -1) -> dict:
    """The demo's data provider: train, calibration, validation, evaluation, transfer.

    Each is an iterable of ``(inputs, labels)`` batches with inputs of shape (B, 1, 40).
    ``train`` and ``evaluation`` are the 80/20 split of ``samples``. ``validation`` picks the
    best training epoch, so ``evaluation`` is used for nothing but the reported accuracy;
    it and the unlabelled ``transfer`` set are made with their own seeds, sharing no sample
    with the others. The generator makes as many samples as asked, so neither costs the
    labelled training set a sample. There is a ``transfer`` set only when
    ``transfer_samples`` asks for one; a large one is made in a worker process while the
    teacher trains.

    For membership inference (the ``[privacy]`` table): ``non_members`` is a set of
    ``non_member_samples`` made with its own seed, used for nothing else, and
    ``references`` holds ``reference_sets`` training sets the size of ``train``, each with
    its own seed, for the reference models of the LiRA attack. ``calibration_seed`` >= 0
    draws the calibration set from its own seed instead of the first training rows: data
    independent of the training set, as a differentially private teacher needs.
    """
    transfer = TransferSet(transfer_samples, transfer_seed, batch_size, background=True) \
        if transfer_samples else None   # started first: made while the rest is made here
    data = cached_mnist1d(samples, seed)
    x, y = torch.from_numpy(data["x"]).unsqueeze(1), torch.from_numpy(data["y"])
    xt, yt = torch.from_numpy(data["x_test"]).unsqueeze(1), torch.from_numpy(data["y_test"])
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    xc, yc = (x, y) if calibration_seed < 0 else _held_out(calibration_samples + 10,
                                                          calibration_seed)
    calibration = DataLoader(TensorDataset(xc[:calibration_samples], yc[:calibration_samples]),
                             batch_size=batch_size)
    evaluation = DataLoader(TensorDataset(xt, yt), batch_size=512)
    sets = {"train": train, "calibration": calibration, "evaluation": evaluation}
    if transfer is not None:
        sets["transfer"] = transfer
    if validation_samples:
        sets["validation"] = DataLoader(TensorDataset(*_held_out(validation_samples,
                                                                 validation_seed)),
                                        batch_size=512)
    if non_member_samples:
        sets["non_members"] = DataLoader(TensorDataset(*_held_out(non_member_samples,
                                                                  non_member_seed)),
                                         batch_size=512)
    if reference_sets:
        sets["references"] = [
            DataLoader(TensorDataset(*_split(cached_mnist1d(samples, reference_seed + i))[:2]),
                       batch_size=batch_size, shuffle=True) for i in range(reference_sets)]
    return sets


def _split(data: dict) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(data["x"]).unsqueeze(1), torch.from_numpy(data["y"]),
            torch.from_numpy(data["x_test"]).unsqueeze(1), torch.from_numpy(data["y_test"]))


def _held_out(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples`` inputs and labels made with their own seed (both parts of the split)."""
    x, y, xt, yt = _split(cached_mnist1d(samples, seed))
    return torch.cat([x, xt]), torch.cat([y, yt])
