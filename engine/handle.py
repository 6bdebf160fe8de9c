"""Run handles: one face for a run, wherever it trains.

    async for event in handle.events(): ...     # every event, in order, to the end
    handle.drain()                               # or: what arrived since the last call
    handle.pause(); handle.resume(); handle.set_lr(0.01); handle.stop()

`LocalHandle` is a run training in a thread of this process (engine.api.start_run).
`FollowHandle` follows a run folder: a run in a detached worker, under torchrun, or one that
ended long ago. A thread tails events.jsonl and watches the training process, so callers
(an asyncio app) never read files; when that process is gone without a final event, the
handle ends the stream with one ProcessGone.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from engine.control import Commands
from engine.events import TERMINAL, Event, ProcessGone
from engine.rundir import EVENTS_FILE, EventTail, RunDir

CONTROL_FILE = "control.jsonl"


class RunHandle(Protocol):
    run_id: str
    run_dir: Path | None

    @property
    def alive(self) -> bool: ...
    def drain(self) -> list[Event]: ...
    def events(self) -> AsyncIterator[Event]: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def stop(self) -> None: ...
    def set_lr(self, lr: float) -> None: ...
    def close(self) -> None: ...


def send_command(run_dir: Path, command: str, value: Any = None) -> None:
    """Queue a command for the process training the run (it reads control.jsonl ~5 times
    a second)."""
    import json
    import os
    import time

    line = json.dumps({"command": command, "value": value, "t": time.time()}) + "\n"
    fd = os.open(Path(run_dir) / CONTROL_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class _EventBuffer:
    """Events handed from a producer thread to one consumer: `drain()` from a timer, or
    `async for` on an event loop (woken at most once per batch of events)."""

    def __init__(self) -> None:
        self._buffer: collections.deque[Event] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._wake_scheduled = False
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready = asyncio.Event()

    def put(self, events: list[Event] | tuple[Event, ...]) -> None:
        """Add events (none: just wake the consumer, e.g. at the end)."""
        self._buffer.extend(events)
        with self._lock:
            if self._loop is None or self._wake_scheduled:
                return
            self._wake_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def _wake(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        if self._ready is not None:
            self._ready.set()

    def drain(self) -> list[Event]:
        out = []
        while self._buffer:
            out.append(self._buffer.popleft())
        return out

    async def stream(self, done: Any) -> AsyncIterator[Event]:
        """Events as they come until `done()` says the producer has ended and all is out."""
        if self._loop is None:
            self.bind(asyncio.get_running_loop())
        assert self._ready is not None
        while True:
            self._ready.clear()
            finished = done()  # before emptying the buffer: the producer's last events
            while self._buffer:
                yield self._buffer.popleft()
            if finished:
                return
            await self._ready.wait()


class LocalHandle(Commands):
    """A run trained by a thread of this process. Commands are safe from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        from engine.control import Control

        self.control = Control()
        self._events = _EventBuffer()
        if loop is not None:
            self._events.bind(loop)
        self._thread: threading.Thread | None = None
        self.run_id = ""
        self.run_dir: Path | None = None
        self.result: Event | None = None

    def sink(self, event: Event) -> None:
        """The trainer's sink (called on the training thread)."""
        self._events.put((event,))

    def start(self, target: Any) -> None:
        def run() -> None:
            self.result = target()
            self._events.put(())

        self._thread = threading.Thread(target=run, name=f"torchdeck-{self.run_id}", daemon=True)
        self._thread.start()

    def send(self, command: str, value: Any = None) -> None:
        self.control.send(command, value)

    def drain(self) -> list[Event]:
        return self._events.drain()

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the run, in order, ending with Finished or Failed."""
        async for event in self._events.stream(lambda: not self.alive):
            yield event
            if isinstance(event, TERMINAL):
                return

    async def wait(self) -> Event:
        """Wait for the run to end; returns its Finished or Failed event."""
        while self.alive:
            await asyncio.sleep(0.05)
        assert self.result is not None
        return self.result

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Nothing to let go of: the run goes on until it ends or is stopped."""


class FollowHandle(Commands):
    """Follows a run through its folder: the whole history so far, then live events, then
    the end (a final event, or ProcessGone when the process died without one).

    history="events" (the default) replays the history as its events, every one of them;
    history="summary" puts one History event instead (the run's summary: about the same
    cost at 10^7 steps as at 10^5, see engine.summary), then the events the log gains after
    the point it summarises."""

    def __init__(
        self,
        run_dir: str | Path,
        poll_s: float = 0.2,
        pid: int | None = None,
        history: str = "events",
    ) -> None:
        if history not in ("events", "summary"):
            raise ValueError(f"history must be 'events' or 'summary', not {history!r}")
        self.history = history
        self.run = RunDir(Path(run_dir))
        self.run_dir = self.run.path
        self.run_id = self.run.id
        self.pid = pid  # the worker this app started, if it started one
        self.poll_s = poll_s
        self._events = _EventBuffer()
        self._loaded = threading.Event()
        self._ended = threading.Event()
        self._closed = threading.Event()
        self._alive = False
        self._thread = threading.Thread(
            target=self._tail, name=f"torchdeck-follow-{self.run_id}", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the run was in progress, its process alive, at the last look (no file
        read here: the tail thread looks)."""
        return self._alive

    @property
    def ended(self) -> bool:
        """The stream is complete: nothing more will come."""
        return self._ended.is_set()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until the history present at opening has been read (for a thread)."""
        return self._loaded.wait(timeout)

    def drain(self) -> list[Event]:
        return self._events.drain()

    async def events(self) -> AsyncIterator[Event]:
        async for event in self._events.stream(lambda: self.ended):
            yield event

    def send(self, command: str, value: Any = None) -> None:
        send_command(self.run_dir, command, value)

    def close(self) -> None:
        self._closed.set()

    def _tail(self) -> None:
        tail = EventTail(self.run_dir / EVENTS_FILE)
        last: Event | None = None
        try:
            if self.history == "summary":
                last = self._put_history(tail)
            while not self._closed.is_set():
                # the record first, then the file: once the process is seen gone, all it
                # ever wrote is in the file, so what this read finds is the whole story
                record = self.run.record(check_checkpoints=False)
                self._alive = record.live
                events = tail.read_new()
                if events:
                    last = events[-1]
                    self._events.put(events)
                self._loaded.set()
                if not tail.behind:
                    if isinstance(last, TERMINAL) and not record.live:
                        return  # ended (a resumed run's earlier end is followed by more)
                    if not record.process_alive and not isinstance(last, TERMINAL):
                        step = getattr(last, "step", getattr(last, "last_step", 0)) or 0
                        self._events.put((ProcessGone(step=step),))
                        return
                self._closed.wait(self.poll_s)
        finally:
            self._alive = False
            self._loaded.set()
            self._ended.set()
            self._events.put(())

    def _put_history(self, tail: EventTail) -> Event | None:
        """Put the History event, move the tail past what it summarises; the log's last
        event there (for the end of the stream) or None."""
        from engine.summary import history_of

        try:
            history, last = history_of(self.run_dir)
        except (OSError, ValueError):  # no summary to be had: the events, every one
            return None
        tail.offset = history.offset
        self._events.put((history,))
        return last
