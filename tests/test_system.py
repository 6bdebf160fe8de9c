"""engine.system: the machine's figures, never an exception."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from engine import system
from engine.system import SystemSample, describe, sample, short_gpu_name


def test_sample_of_this_process_has_rss_and_ram():
    first = sample(os.getpid())
    assert first.rss_bytes is not None and first.rss_bytes > 0
    assert first.ram_total and 0 < first.ram_used <= first.ram_total
    assert first.gpu_name is None  # cpu: no GPU figures asked for
    sum(i * i for i in range(200_000))  # some CPU time between the two looks
    second = sample(os.getpid())
    assert second.cpu_percent is not None and second.cpu_percent >= 0


def test_machine_sample_without_pid():
    sample()
    s = sample()
    assert s.rss_bytes is None and s.cpu_percent is not None and s.ram_total


def test_dead_pid_gives_none_fields():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    s = sample(proc.pid)
    assert s.cpu_percent is None and s.rss_bytes is None
    assert s.ram_total  # the machine's figures are still there


def test_no_nvml_no_gpu_figures(monkeypatch):
    monkeypatch.setattr(system, "_nvml", None)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    s = sample(os.getpid(), "cuda:0")
    assert (s.gpu_name, s.gpu_util_percent, s.gpu_mem_used, s.gpu_temp_c) == (None,) * 4
    assert s.rss_bytes


def test_nvml_without_driver_is_handled(monkeypatch):
    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    fake = types.SimpleNamespace(nvmlInit=no_driver)
    monkeypatch.setattr(system, "_nvml", None)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert sample(None, "cuda").gpu_name is None


def test_fake_gpu_figures(monkeypatch):
    mem = types.SimpleNamespace(used=31 * 2**30, total=80 * 2**30)

    def broken_temp(handle, kind):
        raise RuntimeError("not supported")

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87),
        nvmlDeviceGetMemoryInfo=lambda h: mem,
        nvmlDeviceGetTemperature=broken_temp,
        NVML_TEMPERATURE_GPU=0,
    )
    monkeypatch.setattr(system, "_nvml", None)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    s = sample(None, "cuda:1")
    assert (s.gpu_name, s.gpu_util_percent, s.gpu_temp_c) == ("NVIDIA H100 80GB HBM3", 87.0, None)
    assert (s.gpu_mem_used, s.gpu_mem_total) == (mem.used, mem.total)
    assert describe(s).endswith("H100 87% 31/80 GiB")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert sample(None, "cuda:1").gpu_name is None  # not a visible device


def test_describe():
    s = SystemSample(
        cpu_percent=143.2, rss_bytes=int(1.2 * 2**30), ram_used=int(9.8 * 2**30),
        ram_total=int(23.4 * 2**30), gpu_name="NVIDIA H100 80GB HBM3", gpu_util_percent=87,
        gpu_mem_used=int(31.2 * 2**30), gpu_mem_total=80 * 2**30, gpu_temp_c=61,
    )  # fmt: skip
    assert describe(s) == "cpu 143% · rss 1.2 GiB · ram 9.8/23.4 GiB · H100 87% 61°C 31.2/80 GiB"
    assert describe(SystemSample()) == "-"
    assert describe(SystemSample(rss_bytes=300 * 2**20)) == "rss 300 MiB"


@pytest.mark.parametrize(
    "name, short",
    [("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090"),
     ("NVIDIA A100-SXM4-80GB", "A100-SXM4"), ("Tesla T4", "Tesla T4")],
)  # fmt: skip
def test_short_gpu_name(name, short):
    assert short_gpu_name(name) == short


def test_engine_system_is_torch_free():
    code = "import sys, engine.system as s; s.sample(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
