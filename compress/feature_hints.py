"""Feature (hint) distillation: losses between paired layers of the student and the teacher.

For each ``"student_layer:teacher_layer"`` pair in ``feature_pairs``, a loss between the two
layers' outputs (MSE, cosine, or both -- the last suits pooled sentence embeddings). Where the
widths differ a learned projection (a linear layer, or a 1x1 convolution for feature maps)
maps the student's width onto the teacher's; it is trained with the student and dropped
afterwards.

``config`` below is a :class:`edgepack.compress.distill.DistillConfig` (its ``feature_pairs``,
``feature_loss`` and ``feature_weight``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgepack.core.checks import did_you_mean
from edgepack.core.tensors import call, rows


class FeatureTap:
    """Keeps the latest output of named layers (forward hooks), for hint losses."""

    def __init__(self, model: nn.Module, names: list[str], role: str):
        table = dict(model.named_modules())
        for name in names:
            if name not in table:
                raise ValueError(f"distill.feature_pairs: the {role} has no layer named "
                                 f"{name!r}{did_you_mean(name, [n for n in table if n])}")
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [table[n].register_forward_hook(self._keeper(n)) for n in names]

    def _keeper(self, name: str):
        def keep(_module, _inputs, output):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            self.outputs[name] = getattr(tensor, "last_hidden_state", tensor)
        return keep

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def projection(student_shape: tuple, teacher_shape: tuple, pair: str) -> nn.Module:
    """Map student features onto the teacher's width: identity, linear or a 1x1 conv."""
    if student_shape == teacher_shape:
        return nn.Identity()
    differing = [d for d in range(min(len(student_shape), len(teacher_shape)))
                 if student_shape[d] != teacher_shape[d]]
    if len(student_shape) != len(teacher_shape) or len(differing) != 1 or differing[0] == 0:
        raise ValueError(f"distill.feature_pairs: {pair!r} pairs shapes "
                         f"{list(student_shape)} and {list(teacher_shape)}; only the width "
                         "(channels or hidden size) may differ")
    dim, s_width, t_width = differing[0], student_shape[differing[0]], teacher_shape[differing[0]]
    if dim == len(student_shape) - 1:
        return nn.Linear(s_width, t_width)
    if dim == 1 and len(student_shape) in (3, 4):
        conv = nn.Conv1d if len(student_shape) == 3 else nn.Conv2d
        return conv(s_width, t_width, kernel_size=1)
    raise ValueError(f"distill.feature_pairs: {pair!r} differs in axis {dim}; only the "
                     "channel axis (1) or the last axis can be projected")


def feature_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                 how: str) -> torch.Tensor:
    """MSE, 1 - cosine similarity over the width axis, or their sum."""
    axis = 1 if student_features.dim() in (3, 4) and how != "mse" else -1
    loss = student_features.new_zeros(())
    if "cosine" in how:
        loss = loss + (1 - F.cosine_similarity(student_features, teacher_features,
                                               dim=axis)).mean()
    if "mse" in how:
        loss = loss + F.mse_loss(student_features, teacher_features)
    return loss


class HintedStudent(nn.Module):
    """The student plus the projections its hint losses train; calls run the student only."""

    def __init__(self, student: nn.Module, projections: dict[str, nn.Module]):
        super().__init__()
        self.student = student
        self.projections = nn.ModuleDict({k.replace(".", "/"): v for k, v in projections.items()})

    def forward(self, *inputs):
        return self.student(*inputs)

    def project(self, pair: str, features: torch.Tensor) -> torch.Tensor:
        return self.projections[pair.replace(".", "/")](features)


def feature_pairs(config) -> list[tuple[str, str, str]]:
    """``(pair, student_layer, teacher_layer)`` for each of ``config.feature_pairs``."""
    return [(pair, *pair.split(":")) for pair in config.feature_pairs]


def build_hints(teacher, student, config, sample: torch.Tensor):
    """Hooks on every paired layer and a projection per pair, sized on one sample batch."""
    pairs = feature_pairs(config)
    student_tap = FeatureTap(student, [s for _, s, _ in pairs], "student")
    teacher_tap = FeatureTap(teacher, [t for _, _, t in pairs], "teacher")
    with torch.no_grad():
        call(student.eval(), rows(sample, 0, 2))
        call(teacher.eval(), rows(sample, 0, 2))
    projections = {pair: projection(tuple(student_tap.outputs[s].shape),
                                    tuple(teacher_tap.outputs[t].shape), pair)
                   for pair, s, t in pairs}
    return HintedStudent(student, projections), student_tap, teacher_tap


def hint_loss(model: HintedStudent, student_tap, teacher_tap, config) -> torch.Tensor:
    """The hint losses of one step, from the taps' latest outputs, weighted and averaged."""
    total = 0.0
    for pair, s, t in feature_pairs(config):
        projected = getattr(model, "module", model).project(pair, student_tap.outputs[s])
        total = total + feature_loss(projected, teacher_tap.outputs[t].detach(),
                                     config.feature_loss)
    return config.feature_weight * total / max(len(config.feature_pairs), 1)
