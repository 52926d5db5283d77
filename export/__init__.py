"""torch and Hugging Face models -> verified ONNX; offline optimization; mobile packages;
safe weight and ONNX file handling.

Names are imported lazily: ``bench`` uses ``core.onnx_files`` and ``core.files`` and
must not pull in the torch exporter (and through it ``compress``) to do so.
"""

import importlib

_EXPORTS = {
    "export_hf": "export.hf",
    "optimize_onnx": "export.optimize",
    "package_model": "export.package",
    "ParityError": "export.parity",
    "ExportConfig": "export.torch_export",
    "ExportError": "export.torch_export",
    "export_onnx": "export.torch_export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
