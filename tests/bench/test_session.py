"""Sessions run on the provider asked for, with the options asked for, or fail by name."""

import onnxruntime as ort
import pytest

from edgepack.bench.session import (ProviderError, SessionOptions, make_session, nodes_per_provider,
                                    provider_name)
from tests.bench.conftest import matmul_add, token_model

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.parametrize("name, full", [
    ("cpu", "CPUExecutionProvider"), ("CUDA", "CUDAExecutionProvider"),
    ("CPUExecutionProvider", "CPUExecutionProvider"),
    ("OpenVINOExecutionProvider", "OpenVINOExecutionProvider"),
])
def test_provider_names(name, full):
    assert provider_name(name) == full


@pytest.mark.parametrize("name, message", [
    ("cdua", "did you mean 'cuda'"),
    ("CudaExecutionProvider", "did you mean 'CUDAExecutionProvider'"),
    ("abacus", "unknown execution provider 'abacus'"),
])
def test_unknown_provider_is_an_error(name, message):
    with pytest.raises(ProviderError, match=message):
        provider_name(name)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA; the missing-CUDA error cannot occur")
def test_missing_cuda_is_an_error_never_a_cpu_run(tmp_path):
    with pytest.raises(ProviderError, match="CUDAExecutionProvider is not available"):
        make_session(matmul_add(tmp_path / "mm.onnx"), SessionOptions(provider="cuda"))


def test_edge_controls_reach_the_session(tmp_path):
    options = SessionOptions(threads=2, inter_op_threads=3, sequential=False, spin_wait=False,
                             graph_optimization="basic")
    session = make_session(matmul_add(tmp_path / "mm.onnx"), options)
    so = session.get_session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 3
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.parametrize("kwargs, message", [
    ({"graph_optimization": "al"}, "did you mean 'all'"),
    ({"threads": -1}, "threads must be an integer >= 0"),
    ({"no_cpu_fallback": True}, "needs a provider other than cpu"),
])
def test_bad_session_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SessionOptions(**kwargs)


def test_nodes_per_provider_counts_the_optimized_graph(tmp_path):
    path = token_model(tmp_path / "tok.onnx")
    unoptimized = make_session(path, SessionOptions(graph_optimization="disable"))
    assert nodes_per_provider(unoptimized) == {"CPUExecutionProvider": 4}
    fused = make_session(matmul_add(tmp_path / "mm.onnx"))
    assert nodes_per_provider(fused) == {"CPUExecutionProvider": 1}  # MatMul+Add -> Gemm


def test_bad_file_is_refused_before_onnx_runtime_sees_it(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a valid ONNX model"):
        make_session(path)


@pytest.mark.gpu
def test_no_cpu_fallback_lists_cuda_alone(tmp_path):
    options = SessionOptions(provider="cuda", no_cpu_fallback=True)
    session = make_session(matmul_add(tmp_path / "mm.onnx"), options)
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    config = session.get_session_options()
    assert config.get_session_config_entry("session.disable_cpu_ep_fallback") == "1"


@pytest.mark.gpu
def test_cuda_session_really_runs_on_cuda(tmp_path):
    session = make_session(matmul_add(tmp_path / "mm.onnx"), SessionOptions(provider="cuda"))
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    assert "CUDAExecutionProvider" in nodes_per_provider(session)
