"""Where a distillation student starts: one file each, registered where it is defined.

An init is a small settings dataclass (its own fields, or none) and an :class:`InitSpec`:
``make(teacher, settings, example_inputs, built)`` returns the untrained student, from the
recipe's builder (``built``, for inits that ``need_builder``) or cut from the teacher.
:data:`STUDENT_INITS` finds every module of this package, so a new init is one new file; a
recipe names it with ``student_init`` and writes its settings beside it.

Example: a student that starts as an exact copy of the teacher (a file ``teacher_copy.py``
here), for a distillation that only fine-tunes::

    @dataclass
    class TeacherCopy:
        trainable: bool = True

    def copy_teacher(teacher, settings, example_inputs, built):
        student = copy.deepcopy(teacher)
        for p in student.parameters():
            p.requires_grad_(settings.trainable)
        return student

    STUDENT_INITS.register(InitSpec("teacher-copy", TeacherCopy, copy_teacher))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgepack.core.registry import Registry


@dataclass(frozen=True)
class InitSpec:
    """One way to start a student: ``make(teacher, settings, example_inputs, built)``;
    ``needs_builder``: it uses the recipe's ``student = { build = ... }``."""

    name: str
    settings: type | None
    make: Callable[[Any, Any, Any, Any], Any]
    needs_builder: bool = False
    order: int = 100


STUDENT_INITS: Registry[InitSpec] = Registry("student init", __name__)

__all__ = ["STUDENT_INITS", "InitSpec"]
