"""A student from scratch: the recipe's own builder (``student = { build, args }``), freshly
initialised. The usual choice when the student has another architecture than the teacher."""

from __future__ import annotations

from edgepack.compress.student_inits import STUDENT_INITS, InitSpec


def built_student(teacher, settings, example_inputs, built):
    if built is None:
        raise ValueError("distill.student must name a builder when student_init='scratch'")
    return built


STUDENT_INITS.register(InitSpec("scratch", None, built_student, needs_builder=True, order=10))
