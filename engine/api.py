"""The engine's public, asynchronous face.

    handle = await start_run(config, runs_dir="runs")
    async for event in handle.events():
        ...
    handle.pause(); handle.resume(); handle.set_lr(0.01); handle.stop()

Preparation (importing torch, loading data) and training run in a worker thread, so an
asyncio program such as the app never blocks on them. Events cross over through a buffer
that wakes the event loop at most once per batch of events.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.events import Event, Failed, Finished

TERMINAL = (Finished, Failed)


class RunHandle:
    """A run started in this process. Control methods are safe to call from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from engine.control import Control

        self._loop = loop
        self.control = Control()
        self._buffer: collections.deque[Event] = collections.deque()
        self._wake_scheduled = False
        self._ready = asyncio.Event()
        self._thread: threading.Thread | None = None
        self.run_id = ""
        self.run_dir: Path | None = None
        self.result: Event | None = None

    # called from the training thread
    def _sink(self, event: Event) -> None:
        self._buffer.append(event)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

    def _wake(self) -> None:
        self._wake_scheduled = False
        self._ready.set()

    def drain(self) -> list[Event]:
        """Everything that arrived since the last drain, without waiting (for timer-driven UIs)."""
        out = []
        while self._buffer:
            out.append(self._buffer.popleft())
        return out

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the run, in order, ending with Finished or Failed."""
        while True:
            self._ready.clear()
            while self._buffer:
                event = self._buffer.popleft()
                yield event
                if isinstance(event, TERMINAL):
                    return
            await self._ready.wait()

    async def wait(self) -> Event:
        """Wait for the run to end; returns its Finished or Failed event."""
        while self._thread is not None and self._thread.is_alive():
            await asyncio.sleep(0.05)
        assert self.result is not None
        return self.result

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def stop(self) -> None:
        self.control.stop()

    def set_lr(self, lr: float) -> None:
        self.control.set_lr(lr)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


async def start_run(
    config: Mapping[str, Any],
    runs_dir: str | Path | None = None,
    sinks: Iterable[Any] = (),
) -> RunHandle:
    """Check and prepare a run from a resolved config, then start training it in a thread.

    Raises TorchdeckError (ConfigError, DeviceError, DataError, RunDirError) before anything
    is written if the config cannot run here.
    """
    handle = RunHandle(asyncio.get_running_loop())

    def prepare():  # importing torch and loading data both happen off the event loop
        from engine.build import prepare_run
        from engine.train.loop import Trainer

        prep = prepare_run(dict(config), runs_dir)
        return Trainer(prep, sinks=[handle._sink, *sinks], control=handle.control)

    trainer = await asyncio.to_thread(prepare)
    handle.run_id, handle.run_dir = trainer.p.run.id, trainer.p.run.path

    def target() -> None:
        handle.result = trainer.run()

    handle._thread = threading.Thread(target=target, name=f"torchdeck-{handle.run_id}", daemon=True)
    handle._thread.start()
    return handle


def run_sync(
    config: Mapping[str, Any],
    runs_dir: str | Path | None = None,
    sinks: Iterable[Any] = (),
    control: Any = None,
    device_option: str = "[train] device",
) -> Event:
    """Prepare and train in the calling thread (headless CLI, tests); returns the last event."""
    from engine.build import prepare_run
    from engine.train.loop import Trainer

    prep = prepare_run(dict(config), runs_dir, device_option=device_option)
    return Trainer(prep, sinks=sinks, control=control).run()
