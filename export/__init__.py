"""torch and Hugging Face models -> verified ONNX; safe weight and ONNX file handling."""

from export.parity import ParityError
from export.torch_export import ExportConfig, ExportError, export_onnx

__all__ = ["ExportConfig", "ExportError", "ParityError", "export_onnx"]
