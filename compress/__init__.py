"""Compression stages: distillation, pruning and quantization, each a verb plus a config."""

from edgepack.compress.distill import DistillConfig, distill, kd_loss
from edgepack.compress.prune import PruneConfig, prune
from edgepack.compress.quantize import QuantizeConfig, quantize
from edgepack.core.stage import StageConfig, StageResult

__all__ = ["DistillConfig", "PruneConfig", "QuantizeConfig", "StageConfig", "StageResult",
           "distill", "kd_loss", "prune", "quantize"]
