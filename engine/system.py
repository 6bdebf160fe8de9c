"""The machine in view: CPU, memory and GPU figures of a training process, torch-free.

    s = sample(pid, "cuda:0")      # fast (no blocking interval); never raises
    describe(s)    # 'cpu 143% · rss 1.2 GiB · ram 9.8/23.4 GiB · H100 87% 61°C 31.2/80 GiB'

CPU percentages need two looks: the first `sample` of a pid (or of the machine) primes
psutil and gives cpu_percent None; later ones give the use since the previous call. The
app calls it from a thread every ~2 s; a one-shot command primes, waits a moment
(`sample_after`), then samples. GPU figures come through nvidia-ml-py (pynvml) where a
driver is present; every figure that cannot be had is None.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

GIB = 1024**3


@dataclass(frozen=True)
class SystemSample:
    cpu_percent: float | None = None  # of the process if a pid was given, else the machine
    rss_bytes: int | None = None  # the process's resident memory
    ram_used: int | None = None  # the machine's
    ram_total: int | None = None
    gpu_name: str | None = None
    gpu_util_percent: float | None = None
    gpu_mem_used: int | None = None
    gpu_mem_total: int | None = None
    gpu_temp_c: float | None = None


_lock = threading.Lock()
_procs: dict[int, Any] = {}  # pid -> psutil.Process (cpu_percent needs the previous call)
_MAX_PROCS = 32
_machine_primed = False
_nvml: Any = None  # the pynvml module once initialised; False when it cannot be
_nvml_failed_at = 0.0
_NVML_RETRY_S = 60.0


def _process(pid: int) -> tuple[Any, bool]:
    """The cached psutil.Process for pid, and whether it was seen before."""
    import psutil

    proc = _procs.get(pid)
    if proc is not None:
        try:
            if proc.is_running():  # same pid, same process (create time checked)
                return proc, True
        except psutil.Error:
            pass
        _procs.pop(pid, None)
    proc = psutil.Process(pid)
    if len(_procs) >= _MAX_PROCS:
        _procs.pop(next(iter(_procs)))
    _procs[pid] = proc
    return proc, False


def _cpu_and_rss(pid: int | None) -> tuple[float | None, int | None]:
    global _machine_primed
    try:
        import psutil
    except ImportError:
        return None, None
    if pid is None:
        try:
            value = psutil.cpu_percent(None)
        except Exception:
            return None, None
        primed, _machine_primed = _machine_primed, True
        return (float(value) if primed else None), None
    try:
        proc, seen = _process(pid)
        with proc.oneshot():
            cpu = proc.cpu_percent(None)
            rss = proc.memory_info().rss
        return (float(cpu) if seen else None), int(rss)
    except Exception:  # no such process, a zombie, no permission
        _procs.pop(pid, None)
        return None, None


def _ram() -> tuple[int | None, int | None]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total - vm.available), int(vm.total)
    except Exception:
        return None, None


def _nvml_module() -> Any:
    """pynvml, initialised once; None where there is no library or no driver (retried
    once a minute, not at every sample)."""
    global _nvml, _nvml_failed_at
    if _nvml:
        return _nvml
    if _nvml is False and time.monotonic() - _nvml_failed_at < _NVML_RETRY_S:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        _nvml = pynvml
    except Exception:
        _nvml, _nvml_failed_at = False, time.monotonic()
        return None
    return _nvml


def _visible_devices(pid: int | None) -> str | None:
    """CUDA_VISIBLE_DEVICES of the training process (or of this one)."""
    if pid is not None and pid != os.getpid():
        try:
            import psutil

            return psutil.Process(pid).environ().get("CUDA_VISIBLE_DEVICES")
        except Exception:
            return os.environ.get("CUDA_VISIBLE_DEVICES")
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _gpu_handle(nvml: Any, device: str, pid: int | None) -> Any:
    index = 0
    if ":" in device:
        try:
            index = int(device.split(":", 1)[1])
        except ValueError:
            return None
    visible = _visible_devices(pid)
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if index >= len(ids):
            return None
        ident = ids[index]
        if not ident.isdigit():
            return nvml.nvmlDeviceGetHandleByUUID(ident)
        index = int(ident)
    return nvml.nvmlDeviceGetHandleByIndex(index)


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


def _gpu(device: str, pid: int | None) -> dict[str, Any]:
    if not device.startswith("cuda"):
        return {}
    nvml = _nvml_module()
    if nvml is None:
        return {}
    handle = _try(_gpu_handle, nvml, device, pid)
    if handle is None:
        return {}
    out: dict[str, Any] = {}
    name = _try(nvml.nvmlDeviceGetName, handle)
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    out["gpu_name"] = name if isinstance(name, str) else None
    util = _try(nvml.nvmlDeviceGetUtilizationRates, handle)
    out["gpu_util_percent"] = float(util.gpu) if util is not None else None
    mem = _try(nvml.nvmlDeviceGetMemoryInfo, handle)
    if mem is not None:
        out["gpu_mem_used"], out["gpu_mem_total"] = int(mem.used), int(mem.total)
    temp = _try(nvml.nvmlDeviceGetTemperature, handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
    out["gpu_temp_c"] = float(temp) if temp is not None else None
    return out


def sample(pid: int | None = None, device: str = "cpu") -> SystemSample:
    """CPU and memory of the process `pid` (or the machine), and the GPU `device` names
    ("cuda", "cuda:N"); None for every figure that cannot be had. Never raises."""
    try:
        with _lock:
            cpu, rss = _cpu_and_rss(pid)
            used, total = _ram()
            gpu = _gpu(str(device or "cpu"), pid)
        return SystemSample(cpu, rss, used, total, **gpu)
    except Exception:  # a figure is never worth an exception
        return SystemSample()


def sample_after(pid: int | None = None, device: str = "cpu", wait_s: float = 0.25) -> SystemSample:
    """A one-shot sample with a CPU figure: prime, wait, sample (for commands, not the app)."""
    sample(pid, device)
    time.sleep(wait_s)
    return sample(pid, device)


def short_gpu_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100', 'NVIDIA GeForce RTX 4090' -> 'GeForce RTX 4090'."""
    name = name.removeprefix("NVIDIA ").strip()
    return re.sub(r"[\s-]+\d+\s?GB\b.*$", "", name) or name


def _gib(n: int) -> str:
    if n < GIB:
        return f"{n / 1024**2:.0f} MiB"
    return f"{n / GIB:.1f} GiB"


def _num(n: int) -> str:
    value = n / GIB
    return f"{value:.0f}" if value >= 10 and abs(value - round(value)) < 0.05 else f"{value:.1f}"


def describe(s: SystemSample) -> str:
    """One line: 'cpu 143% · rss 1.2 GiB · ram 9.8/23.4 GiB · H100 87% 61°C 31.2/80 GiB'."""
    parts = []
    if s.cpu_percent is not None:
        parts.append(f"cpu {s.cpu_percent:.0f}%")
    if s.rss_bytes is not None:
        parts.append(f"rss {_gib(s.rss_bytes)}")
    if s.ram_used is not None and s.ram_total:
        parts.append(f"ram {_num(s.ram_used)}/{_num(s.ram_total)} GiB")
    gpu = []
    if s.gpu_name:
        gpu.append(short_gpu_name(s.gpu_name))
    if s.gpu_util_percent is not None:
        gpu.append(f"{s.gpu_util_percent:.0f}%")
    if s.gpu_temp_c is not None:
        gpu.append(f"{s.gpu_temp_c:.0f}°C")
    if s.gpu_mem_used is not None and s.gpu_mem_total:
        gpu.append(f"{_num(s.gpu_mem_used)}/{_num(s.gpu_mem_total)} GiB")
    if gpu:
        parts.append(" ".join(gpu))
    return " · ".join(parts) if parts else "-"
