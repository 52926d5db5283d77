"""Memory a session costs: peak resident memory on the host, peak device memory on a GPU.

Host: the peak resident set size (RSS) while a session is created, run once and warmed up,
minus the RSS just before (freed heap pages are handed back to the OS first, so memory the
harness just let go of is not silently reused and missed). On Linux the kernel keeps that peak for us (``VmHWM`` in
``/proc/self/status``) and lets a process reset it (``echo 5 > /proc/self/clear_refs``), so
the peak is exact and costs nothing while running. Elsewhere a thread samples the RSS every
few milliseconds, which can miss a short spike; the result says which method was used.

GPU: ONNX Runtime has no Python API for its CUDA arena statistics, and we do not want torch or
``nvidia-smi`` in the loop, so :class:`GpuMemory` asks the NVIDIA driver library (NVML, in
``libnvidia-ml.so.1`` beside every driver) through ``ctypes``: the memory this process holds
on the GPUs, or, where the process is not visible to the driver (a container with its own PID
namespace), the growth of the memory used on the devices. ONNX Runtime's CUDA arena does not
give memory back between runs by default, so the last reading after warm-up and the timed runs
is the peak; the readings taken along the way only guard against an arena set to shrink.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
from pathlib import Path

import psutil

MB = 2**20
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def rss_mb() -> float:
    """The current resident set size of this process, in MiB."""
    return psutil.Process().memory_info().rss / MB


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Without this, memory freed just before a measurement (say, the ONNX checker's copy of
    the weights) stays resident and is reused by the session, which then looks free.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass


def _read_hwm_mb() -> float | None:
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # the kernel reports kB
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter to the current RSS; False where not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        _CLEAR_REFS.write_text("5")
        return _read_hwm_mb() is not None
    except OSError:
        return False


class PeakRSS:
    """Context manager measuring the peak RSS inside its block, above the RSS before it.

    >>> with PeakRSS() as peak:
    ...     buffer = b"x" * (50 * 2**20)  # written, so resident
    >>> peak.delta_mb >= 40
    True
    """

    SAMPLE_S = 0.002

    def __init__(self):
        self.before_mb = 0.0
        self.peak_mb = 0.0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakRSS":
        release_freed_memory()
        self.before_mb = rss_mb()
        self.peak_mb = self.before_mb
        if _reset_hwm():
            self.method = "kernel peak (VmHWM)"
        else:
            self.method = f"sampled every {self.SAMPLE_S * 1e3:.0f} ms"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.SAMPLE_S):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, rss_mb())
        else:
            self.peak_mb = max(self.peak_mb, _read_hwm_mb() or 0.0)

    @property
    def delta_mb(self) -> float:
        """Peak RSS inside the block minus the RSS before it (never negative)."""
        return max(0.0, self.peak_mb - self.before_mb)


class _ProcessInfo(ctypes.Structure):
    # nvmlProcessInfo_t (v2/v3 layout): pid, usedGpuMemory, gpuInstanceId, computeInstanceId
    _fields_ = [("pid", ctypes.c_uint), ("used", ctypes.c_ulonglong),
                ("gpu_instance", ctypes.c_uint), ("compute_instance", ctypes.c_uint)]


class _ProcessInfoV1(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint), ("used", ctypes.c_ulonglong)]


class _MemoryInfo(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                ("used", ctypes.c_ulonglong)]


class GpuMemory:
    """GPU memory held by this process, read from the NVIDIA driver (NVML) through ctypes.

    ``GpuMemory.open()`` returns None where there is no NVIDIA driver. ``start()`` takes the
    baseline; ``sample()`` records a reading; ``peak_mb`` is the largest reading above the
    baseline and ``method`` says whether it is this process's own memory or the devices'.
    """

    def __init__(self, nvml):
        self._nvml = nvml
        count = ctypes.c_uint()
        self._check(nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)))
        self._handles = []
        for index in range(count.value):
            handle = ctypes.c_void_p()
            self._check(nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)))
            self._handles.append(handle)
        self.method = ""
        self._own_baseline_mb = 0.0
        self._devices_baseline_mb = 0.0
        self.peak_mb = 0.0

    @staticmethod
    def _check(code: int) -> None:
        if code != 0:
            raise OSError(f"NVML call failed with code {code}")

    @classmethod
    def open(cls) -> "GpuMemory | None":
        """Load NVML and list the devices; None where the driver library is missing."""
        for name in ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll"):
            try:
                nvml = ctypes.CDLL(name)
                cls._check(nvml.nvmlInit_v2())
                return cls(nvml)
            except (OSError, AttributeError):
                continue
        return None

    def names(self) -> list[str]:
        """The devices' names as the driver gives them ("NVIDIA H200", ...)."""
        names = []
        for handle in self._handles:
            buffer = ctypes.create_string_buffer(96)
            if self._nvml.nvmlDeviceGetName(handle, buffer, ctypes.c_uint(96)) == 0:
                names.append(buffer.value.decode(errors="replace"))
        return names

    def _process_mb(self) -> float | None:
        """This process's memory on all devices; None where the driver cannot see our PID."""
        getter = getattr(self._nvml, "nvmlDeviceGetComputeRunningProcesses_v3", None)
        struct = _ProcessInfo
        if getter is None:
            getter, struct = self._nvml.nvmlDeviceGetComputeRunningProcesses, _ProcessInfoV1
        pid, total, seen = os.getpid(), 0, False
        for handle in self._handles:
            count = ctypes.c_uint(64)
            infos = (struct * 64)()
            if getter(handle, ctypes.byref(count), infos) != 0:
                return None
            for info in infos[: count.value]:
                if info.pid == pid:
                    seen = True
                    total += info.used
        return total / MB if seen else None

    def _devices_used_mb(self) -> float:
        total = 0
        for handle in self._handles:
            info = _MemoryInfo()
            self._check(self._nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(info)))
            total += info.used
        return total / MB

    def _growth_mb(self) -> float:
        """Memory above the baseline: this process's own where visible, else the devices'."""
        own = self._process_mb()
        if own is not None:
            self.method = "this process (NVML)"
            return own - self._own_baseline_mb
        self.method = "growth of device memory used (NVML; other processes can add to it)"
        return self._devices_used_mb() - self._devices_baseline_mb

    def start(self) -> None:
        """Take the baselines before the session exists."""
        self._own_baseline_mb = self._process_mb() or 0.0
        self._devices_baseline_mb = self._devices_used_mb()
        self.peak_mb = 0.0

    def sample(self) -> float:
        """Record one reading; return the peak so far above the baseline."""
        self.peak_mb = max(self.peak_mb, self._growth_mb())
        return self.peak_mb
