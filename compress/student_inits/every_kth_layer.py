"""A transformer teacher's layers 0, k, 2k, ... (DistilBERT's choice: k = 2), optionally with
narrower feed-forward blocks (:mod:`compress.layer_students`)."""

from __future__ import annotations

from dataclasses import dataclass

from compress.layer_students import narrow_ffn, student_keeping_every_kth_layer
from compress.student_inits import STUDENT_INITS, InitSpec


@dataclass
class EveryKthLayer:
    keep_every: int = 2     # keep layers 0, k, 2k, ...
    ffn_width: int = 0      # feed-forward neurons kept per layer (0: all)

    def __post_init__(self):
        if self.keep_every < 1:
            raise ValueError(f"distill.keep_every must be >= 1, got {self.keep_every}")
        if self.ffn_width < 0:
            raise ValueError(f"distill.ffn_width must be >= 0 (0: the teacher's width), got "
                             f"{self.ffn_width}")


def every_kth_layer(teacher, settings: EveryKthLayer, example_inputs, built):
    student = student_keeping_every_kth_layer(teacher, settings.keep_every)
    if settings.ffn_width:
        narrow_ffn(student, settings.ffn_width)
    return student


STUDENT_INITS.register(InitSpec("every-kth-layer", EveryKthLayer, every_kth_layer, order=30))
