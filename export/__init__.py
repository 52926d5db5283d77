"""torch and Hugging Face models -> verified ONNX; offline optimization; mobile packages;
safe weight files."""

from edgepack.export.hf import export_hf
from edgepack.export.optimize import OptimizeConfig, optimize_onnx
from edgepack.export.package import PackageConfig, package_model
from edgepack.export.parity import ParityError
from edgepack.export.torch_export import ExportConfig, ExportError, export_onnx

__all__ = ["ExportConfig", "ExportError", "OptimizeConfig", "PackageConfig", "ParityError",
           "export_hf", "export_onnx", "optimize_onnx", "package_model"]
