"""Shared test setup: an isolated cache folder, and the markers' skip rules."""

import os
import shutil
import tempfile

import pytest


def pytest_configure(config):
    # The arm64 userland is built once per machine (`edgepack env --setup-arm64`); tests
    # run in the user's one, read-only, when it is there.
    from edgepack.export.arm64_userland import default_cache_root

    os.environ.setdefault("EDGEPACK_ARM64_CACHE", str(default_cache_root()))
    # Tests never read or fill the user's ~/.cache/edgepack.
    config._edgepack_test_cache = tempfile.mkdtemp(prefix="edgepack-test-cache-")
    os.environ["XDG_CACHE_HOME"] = config._edgepack_test_cache
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    _hand_built_models_are_readable()


def pytest_unconfigure(config):
    # The session's cache (converted models, datasets: up to half a gigabyte) goes with it.
    cache = getattr(config, "_edgepack_test_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


def _hand_built_models_are_readable() -> None:
    """Models the tests build with ``onnx.helper.make_model`` carry onnx's newest IR version,
    which the installed onnxruntime may not read yet (onnx 1.23 writes IR 14, onnxruntime-gpu
    1.31 reads up to 13). edgepack lowers every file it writes (bench/ir_version.py); the
    tests' own models get the same treatment, so they test edgepack, not that mismatch."""
    from onnx import helper

    from edgepack.bench.ir_version import lower_to_runtime, runtime_ir_version

    runtime_ir_version()  # probed (and cached) with the real make_model
    make_model = helper.make_model

    def make_readable_model(*args, **kwargs):
        model = make_model(*args, **kwargs)
        lower_to_runtime(model)
        return model

    helper.make_model = make_readable_model


def _has_cuda_ep() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def _arm64_missing() -> str:
    """Why the arm64 tests cannot run here ("" when they can)."""
    import shutil

    from edgepack.export.arm64_userland import SETUP_HINT, find_userland

    if not (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")):
        return "no qemu-user here: apt-get install qemu-user-static, then " + SETUP_HINT
    if find_userland() is None:
        return "no arm64 userland in $EDGEPACK_ARM64_CACHE: " + SETUP_HINT
    return ""


def pytest_collection_modifyitems(config, items):
    skips = {}
    if not _has_cuda_ep():
        skips["gpu"] = "no CUDA: onnxruntime has no CUDAExecutionProvider here (install " \
                       "edgepack[gpu] on a machine with an NVIDIA GPU)"
    if any("arm64" in item.keywords for item in items):
        missing = _arm64_missing()
        if missing:
            skips["arm64"] = missing
    for item in items:
        for marker, reason in skips.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory):
    """A tiny Llama decoder (HF folder with tokenizer) and Optimum's KV-cache ONNX export of
    it: ``(hf_folder, onnx_path)``; the ONNX folder also holds the tokenizer files."""
    pytest.importorskip("optimum.exporters.onnx")
    from tests.tiny_decoder import export_with_optimum, make_tiny_decoder_folder

    root = tmp_path_factory.mktemp("tiny-decoder")
    hf_folder = make_tiny_decoder_folder(root / "hf")
    return hf_folder, export_with_optimum(hf_folder, root / "onnx")
