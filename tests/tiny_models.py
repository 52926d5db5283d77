"""Tiny versions of the zoo's models for the test suite (random weights, built in seconds)."""

from __future__ import annotations

from edgepack.pipeline.architecture_sweep import Architecture
from edgepack.zoo.minilm import bert_embedder as tiny_bert_embedder  # noqa: F401 - the tests' name


def tiny_architectures() -> list[Architecture]:
    """The same structures on tiny widths, for the test suite."""
    image = 32
    return [Architecture("ResNet-18", "resnet18", {"num_classes": 10, "width": 8, "blocks": 1},
                         image),
            Architecture("MobileNetV3-small", "mobilenet_v3_small",
                         {"num_classes": 10, "width_mult": 0.25, "depth": 5}, image),
            Architecture("EfficientNet-B0", "efficientnet_b0",
                         {"num_classes": 10, "width_mult": 0.25, "depth_mult": 0.25}, image),
            Architecture("ConvNeXt-atto", "convnext_atto",
                         {"num_classes": 10, "width": 8, "depths": (1, 1, 1, 1),
                          "layer_scale": 1.0}, image),
            Architecture("ViT-tiny", "vit_tiny", {"num_classes": 10, "img_size": image,
                                                  "patch_size": 8, "dim": 48, "depth": 2,
                                                  "num_heads": 4}, image),
            Architecture("BERT", "bert_classifier",
                         {"vocab_size": 100, "hidden_size": 32, "num_layers": 2,
                          "num_heads": 4, "intermediate_size": 64}, sequence=16, vocab=100)]
