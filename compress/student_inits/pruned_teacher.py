"""A copy of the teacher with a share of its channels cut (group L2 magnitude, through the
structured pruner): the student begins from the teacher's strongest channels, far closer to
it than one from scratch."""

from __future__ import annotations

from dataclasses import dataclass

from edgepack.core.checks import check_finite_fields, check_range
from edgepack.compress.student_inits import STUDENT_INITS, InitSpec


@dataclass
class PrunedTeacher:
    init_ratio: float = 0.5     # share of the teacher's channels removed

    def __post_init__(self):
        check_finite_fields(self, "distill")
        check_range("distill", "init_ratio", self.init_ratio, 0.0, 1.0)


def student_from_pruned_teacher(teacher, ratio: float, example_inputs, round_to: int = 0):
    """A copy of the teacher with ``ratio`` of its channels cut."""
    import copy

    from edgepack.compress.prune import PruneConfig, structured_prune

    student = copy.deepcopy(teacher)
    structured_prune(student, PruneConfig(ratio=ratio, round_to=round_to), example_inputs,
                     progress=False)
    for p in student.parameters():
        p.requires_grad_(True)
    return student


STUDENT_INITS.register(InitSpec(
    "pruned-teacher", PrunedTeacher, order=20,
    make=lambda teacher, settings, example_inputs, built: student_from_pruned_teacher(
        teacher, settings.init_ratio, example_inputs)))
