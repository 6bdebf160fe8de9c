"""What the app needs from the engine, in one small interface, so tests can inject a fake.

`RealEngine` goes through the engine's public API only. Nothing here imports torch at module
import time: `devices`, `device_memory` and `start` import it lazily, and the app calls the
blocking ones from worker threads.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol


class RunHandleLike(Protocol):
    run_id: str
    run_dir: Path | None

    @property
    def alive(self) -> bool: ...
    def drain(self) -> list[Any]: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def stop(self) -> None: ...
    def set_lr(self, lr: float) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...


class Engine(Protocol):
    def presets(self, extra_dirs: Iterable[str | Path]) -> list[Any]: ...
    def devices(self) -> list[str]: ...
    def device_memory(self, device: str) -> str: ...
    async def start(self, config: Mapping[str, Any], runs_dir: str | Path | None) -> Any: ...


class RealEngine:
    def presets(self, extra_dirs: Iterable[str | Path]) -> list[Any]:
        from engine.presets import discover_presets

        return discover_presets(extra_dirs)

    def devices(self) -> list[str]:
        from engine.devices import available_devices

        return available_devices()

    def device_memory(self, device: str) -> str:
        """'1.2/8.0 GiB' on CUDA (allocated by torch / total), '' elsewhere."""
        if not device.startswith("cuda"):
            return ""
        import torch

        index = int(device.partition(":")[2] or 0)
        used = torch.cuda.memory_allocated(index) / 2**30
        total = torch.cuda.get_device_properties(index).total_memory / 2**30
        return f"{used:.1f}/{total:.1f} GiB"

    async def start(self, config: Mapping[str, Any], runs_dir: str | Path | None) -> Any:
        # start_run imports engine.session (and so torch) on the calling thread; import it in
        # a thread first so the event loop never stalls on torch's import
        for name in ("engine.session", "engine.trainer"):
            await asyncio.to_thread(importlib.import_module, name)
        from engine.api import start_run

        return await start_run(config, runs_dir=runs_dir)
