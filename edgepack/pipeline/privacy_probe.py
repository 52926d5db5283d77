"""Membership inference on every row of a run, on fixed member and non-member samples.

The pipeline makes one :class:`PrivacyProbe` beside the teacher's row and calls
:meth:`measure` for the teacher and each stage's candidate, on its ONNX file through ONNX
Runtime (:func:`edgepack.bench.privacy.evaluate_membership`).

- **Members** are the teacher's training samples: the data provider's ``"members"`` set if
  it gives one, else the first rows of ``"train"`` (in the dataset's own order, not a
  shuffled draw). Every stage is attacked on the same members: the question is what each
  artifact leaks about the private training set, whatever data its own stage used.
- **Non-members** are the provider's ``"non_members"`` set: samples from the same
  distribution that nothing in the run trains on or selects with (not the validation set,
  which picks epochs, nor the evaluation set, which the keep rule reads).
- **LiRA's references** (``[privacy] references = K``) are K models of the teacher's
  architecture trained with the teacher's settings, each on its own set of the provider's
  ``"references"`` list (disjoint from both sets above), cached like the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgepack.bench.privacy import MemberSets, PrivacyConfig, check_member_sets, evaluate_membership
from edgepack.bench.robustness import robustness_session
from edgepack.compress.kd import collect
from edgepack.core.errors import BadInput
from edgepack.core.tensors import as_tuple, to_numpy


@dataclass
class PrivacySetup:
    """What the pipeline needs for the privacy section: the settings, LiRA's reference
    models, the DP-SGD record of the teacher (None: not DP) and the sets declared public."""

    config: PrivacyConfig = field(default_factory=PrivacyConfig)
    references: list = field(default_factory=list)
    dp_record: dict | None = None
    public: tuple[str, ...] = ()

    @property
    def reported(self) -> bool:
        return self.config.enabled or self.dp_record is not None


def check_privacy_data(config: PrivacyConfig, data: dict) -> None:
    """Before the run folder exists: the provider gives what the attacks need, enough of it."""
    if not config.enabled:
        return
    if data.get("non_members") is None:
        raise BadInput("[privacy] needs the data provider to return a 'non_members' set: "
                       "samples from the training distribution that the run never trains on "
                       "or selects with (for edgepack.zoo:mnist1d, set data args "
                       "non_member_samples = N)")
    members = data.get("members")
    _check_size(members if members is not None else data.get("train"), config.samples,
                "members" if members is not None else "train")
    _check_size(data["non_members"], config.samples, "non_members")
    needs = config.references if "lira" in config.attacks else 0
    given = data.get("references") or []
    if needs and len(given) < needs:
        raise BadInput(f"[privacy] references = {needs} needs the data provider to return "
                       f"'references': a list of at least {needs} training sets disjoint from "
                       f"the members and non-members (got {len(given)}; for "
                       "edgepack.zoo:mnist1d, set data args reference_sets = N)")


def _known_size(batches) -> int | None:
    """How many samples a loader's dataset holds, where it says (None for a stream)."""
    dataset = getattr(batches, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def _too_few(samples: int, have: int, what: str) -> BadInput:
    return BadInput(f"[privacy] samples = {samples}, but the data provider's {what} set "
                    f"has {have} labelled samples; lower samples or give more")


def _check_size(batches, samples: int, what: str) -> None:
    """Refuse a set known to be smaller than ``samples``; a stream is counted when read."""
    have = _known_size(batches)
    if have is not None and have < samples:
        raise _too_few(samples, have, what)


def _rows(batches, samples: int, what: str) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    dataset = getattr(batches, "dataset", None)
    if dataset is not None and hasattr(dataset, "tensors"):   # the dataset's own order
        tensors = dataset.tensors
        inputs, labels = tensors[:-1], tensors[-1]
        inputs = tuple(t[:samples] for t in inputs)
        labels = labels[:samples]
    else:
        inputs, labels = collect(batches, samples)
        inputs = as_tuple(inputs)
    if labels is None or len(labels) < samples:
        raise _too_few(samples, 0 if labels is None else len(labels), what)
    return tuple(to_numpy(t) for t in inputs), labels.numpy().astype(np.int64)


def member_sets(config: PrivacyConfig, data: dict, input_names: list[str]) -> MemberSets:
    """``samples`` members and as many non-members, by the teacher's ONNX input names."""
    members = data.get("members")
    m_inputs, m_labels = _rows(members if members is not None else data["train"],
                               config.samples, "members" if members is not None else "train")
    n_inputs, n_labels = _rows(data["non_members"], config.samples, "non_members")
    sets = MemberSets(dict(zip(input_names, m_inputs)), m_labels,
                      dict(zip(input_names, n_inputs)), n_labels,
                      source="the data provider's members and non_members")
    check_member_sets(sets)
    return sets


class PrivacyProbe:
    """The run's member sets and reference outputs; :meth:`measure` attacks one artifact."""

    def __init__(self, config: PrivacyConfig, sets: MemberSets,
                 references: list[nn.Module] = ()):
        self.config, self.sets = config, sets
        self.reference_logits = [(_logits(r, sets.members), _logits(r, sets.non_members))
                                 for r in references]

    def measure(self, onnx_path: Path) -> dict:
        """``{"privacy": figures}`` for one ONNX file (empty when privacy is off)."""
        if not self.config.enabled:
            return {}
        return {"privacy": evaluate_membership(robustness_session(onnx_path), self.sets,
                                               self.config, self.reference_logits or None)}


def _logits(model: nn.Module, arrays: dict[str, np.ndarray]) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        inputs = [torch.from_numpy(a) for a in arrays.values()]
        out = torch.cat([model(*[t[i:i + 512] for t in inputs]) for i in
                         range(0, len(inputs[0]), 512)])
    return out.double().numpy()
