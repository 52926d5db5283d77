"""A transformer teacher's layers 0, k, 2k, ... (DistilBERT's choice: k = 2), optionally with
narrower feed-forward blocks (:mod:`edgepack.compress.layer_students`)."""

from __future__ import annotations

from dataclasses import dataclass

from edgepack.compress.layer_students import (check_ffn_width, student_keeping_every_kth_layer,
                                              with_ffn_width)
from edgepack.compress.student_inits import STUDENT_INITS, InitSpec


@dataclass
class EveryKthLayer:
    keep_every: int = 2     # keep layers 0, k, 2k, ...
    ffn_width: int = 0      # feed-forward neurons kept per layer (0: all)

    def __post_init__(self):
        if self.keep_every < 1:
            raise ValueError(f"distill.keep_every must be >= 1, got {self.keep_every}")
        check_ffn_width(self.ffn_width)


def every_kth_layer(teacher, settings: EveryKthLayer, example_inputs, built):
    student = student_keeping_every_kth_layer(teacher, settings.keep_every)
    return with_ffn_width(student, settings.ffn_width)


STUDENT_INITS.register(InitSpec("every-kth-layer", EveryKthLayer, every_kth_layer, order=30))
