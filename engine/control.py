"""Commands for a running training loop (pause, resume, stop, set-lr), from any thread.

Torch-free, so a UI can hold one before torch is imported.
"""

from __future__ import annotations

import queue
from typing import Any


class Commands:
    """pause / resume / stop / set_lr, each one `send` (a Control, and every run handle)."""

    def send(self, command: str, value: Any = None) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        self.send("pause")

    def resume(self) -> None:
        self.send("resume")

    def stop(self) -> None:
        self.send("stop")

    def set_lr(self, lr: float) -> None:
        self.send("set_lr", float(lr))


class Control(Commands):
    """Commands for a running loop, safe to send from any thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.pending = False

    def send(self, command: str, value: Any = None) -> None:
        self._queue.put((command, value))
        self.pending = True

    def drain(self) -> list[tuple[str, Any]]:
        self.pending = False
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def wait(self, timeout: float) -> tuple[str, Any] | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
