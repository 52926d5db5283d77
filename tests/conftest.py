"""Shared test setup: an isolated cache folder, and the markers' skip rules."""

import os
import tempfile

import pytest


def pytest_configure(config):
    # Tests never read or fill the user's ~/.cache/edgepack.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="edgepack-test-cache-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _has_cuda_ep() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def pytest_collection_modifyitems(config, items):
    if _has_cuda_ep():
        return
    skip = pytest.mark.skip(reason="no CUDA: onnxruntime has no CUDAExecutionProvider here "
                                   "(install edgepack[gpu] on a machine with an NVIDIA GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
