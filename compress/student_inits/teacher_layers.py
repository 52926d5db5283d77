"""The transformer teacher layers you name (for all-MiniLM-L6-v2, layers 0, 4 and 5 start at
cosine 0.72 to the teacher, against 0.36 for 0, 2 and 4), optionally with narrower
feed-forward blocks (:mod:`edgepack.compress.layer_students`)."""

from __future__ import annotations

from dataclasses import dataclass

from edgepack.compress.layer_students import check_ffn_width, student_keeping_layers, with_ffn_width
from edgepack.compress.student_inits import STUDENT_INITS, InitSpec


@dataclass
class TeacherLayers:
    keep_layers: tuple[int, ...] = ()   # the teacher layers kept, e.g. 0, 4, 5
    ffn_width: int = 0                  # feed-forward neurons kept per layer (0: all)

    def __post_init__(self):
        layers = list(self.keep_layers)
        if not layers:
            raise ValueError("distill.keep_layers (teacher layer numbers, e.g. [0, 3, 5]) goes "
                             "with student_init='teacher-layers', and that init needs it")
        if layers != sorted(set(layers)) or any(i < 0 for i in layers):
            raise ValueError(f"distill.keep_layers must be distinct layer numbers >= 0 in "
                             f"increasing order, got {layers}")
        check_ffn_width(self.ffn_width)


def teacher_layers(teacher, settings: TeacherLayers, example_inputs, built):
    student = student_keeping_layers(teacher, settings.keep_layers)
    return with_ffn_width(student, settings.ffn_width)


STUDENT_INITS.register(InitSpec("teacher-layers", TeacherLayers, teacher_layers, order=40))
