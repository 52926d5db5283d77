"""Compression stages: distillation, pruning and quantization, each a verb plus a config."""

from compress.distill import DistillConfig, distill, kd_loss
from compress.prune import PruneConfig, prune
from compress.quantize import QuantizeConfig, quantize
from core.stage import StageConfig, StageResult

__all__ = ["DistillConfig", "PruneConfig", "QuantizeConfig", "StageConfig", "StageResult",
           "distill", "kd_loss", "prune", "quantize"]
