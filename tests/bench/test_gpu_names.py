"""The report names the GPU a CUDA figure came from (the CPU alone does not reproduce it)."""

from __future__ import annotations

import ctypes

from edgepack.bench.memory import GpuMemory
from edgepack.pipeline.run_report import measured_on

ENV = {"cpu": "Some CPU", "arch": "x86_64", "logical_cores": 16, "onnxruntime": "1.31.1",
       "gpus": ["NVIDIA H200"]}


class FakeNvml:
    """NVML's nvmlDeviceGetName: fills the caller's buffer with the device's name."""

    def __init__(self, names):
        self._names = names

    def nvmlDeviceGetName(self, handle, buffer, length):
        name = self._names[handle].encode()
        ctypes.memmove(buffer, name, len(name) + 1)
        return 0


def test_the_driver_names_each_device():
    gpu = GpuMemory.__new__(GpuMemory)
    gpu._nvml, gpu._handles = FakeNvml(["NVIDIA H200", "NVIDIA H100 80GB HBM3"]), [0, 1]
    assert gpu.names() == ["NVIDIA H200", "NVIDIA H100 80GB HBM3"]


def test_a_cuda_run_names_the_gpu_and_a_cpu_run_the_cpu():
    cuda = measured_on(ENV, {"providers": ["cuda", "cpu"]})
    assert cuda.startswith("NVIDIA H200 (host Some CPU (x86_64, 16 logical cores))")
    assert "ONNX Runtime 1.31.1 with the cuda provider" in cuda
    cpu = measured_on(ENV, {"providers": ["cpu"]})
    assert cpu == "Some CPU (x86_64, 16 logical cores), ONNX Runtime 1.31.1 on the CPU"
    unnamed = measured_on({**ENV, "gpus": []}, {"providers": ["cuda"]})
    assert unnamed.startswith("a GPU the NVIDIA driver did not name")


def test_a_run_timed_on_several_providers_shows_each_and_the_fastest():
    from edgepack.pipeline.run_report import providers_section

    def timed(cuda, cpu):
        return {"CUDAExecutionProvider": {"latency_ms": {"p50": cuda}},
                "CPUExecutionProvider": {"latency_ms": {"p50": cpu}}}

    rows = [{"name": "teacher", "by_provider": timed(0.116, 0.047)},
            {"name": "04-quantize", "by_provider": timed(0.05, 0.0193)},
            {"name": "01-distill", "by_provider": timed(0.01, 0.033)}]
    text = providers_section(rows)
    assert "| model | CUDA p50 ms | CPU p50 ms | fastest |" in text
    assert "| teacher | 0.1160 | 0.0470 | CPU |" in text
    assert "| 01-distill | 0.0100 | 0.0330 | CUDA |" in text
    assert providers_section([{"name": "teacher"}]) == ""
