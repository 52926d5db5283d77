"""edgepack: distill, prune, export to ONNX, quantize and benchmark, with one honest report.

The public API is imported lazily, so that ``edgepack --help`` and ``edgepack env`` start
without loading torch.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "run_pipeline": "edgepack.pipeline.run",
    "Recipe": "edgepack.pipeline.recipe",
    "load_recipe": "edgepack.pipeline.recipe",
    "run_recipe": "edgepack.pipeline.recipe_runner",
    "run_demo": "edgepack.pipeline.recipe_runner",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgepack' has no attribute {name!r}")
