"""Following a run through its run directory: the whole history so far, then live events.

`FollowHandle` has the same face as `engine.api.RunHandle` (events(), drain(), pause,
resume, stop, set_lr), so a UI does not care whether the run lives in this process, in a
detached worker, or finished long ago. Commands go through the run's control.jsonl.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from engine.events import Event, Failed, Finished
from engine.procs.worker import send_command
from engine.rundir import EVENTS_FILE, EventTail, RunDir

TERMINAL = (Finished, Failed)


class FollowHandle:
    def __init__(self, run_dir: str | Path, poll_s: float = 0.2) -> None:
        self.run = RunDir(Path(run_dir))
        self.run_dir = self.run.path
        self.run_id = self.run.id
        self.poll_s = poll_s
        self._tail = EventTail(self.run_dir / EVENTS_FILE)
        self._ended = False
        self._last: Event | None = None

    @property
    def alive(self) -> bool:
        from engine.rundir import run_is_alive

        try:
            meta = self.run.read_meta()
        except Exception:  # damaged or missing run.toml: nothing alive to follow
            return False
        return meta.get("run", {}).get("status") in ("running", "paused") and run_is_alive(meta)

    def drain(self) -> list[Event]:
        """Events written since the last call, without waiting."""
        events = self._tail.read_new()
        if events:
            self._last = events[-1]
        return events

    async def events(self) -> AsyncIterator[Event]:
        """Every event so far, then new ones as they land, until the run ends (or its process
        is gone without a final event: then one Failed saying so)."""
        quiet = 0.0
        while True:
            events = self.drain()
            for event in events:
                yield event
            if events:
                quiet = 0.0
                continue
            if isinstance(self._last, TERMINAL) and not self.alive:
                return
            quiet += self.poll_s
            if quiet >= 1.0:
                quiet = 0.0
                if not self.alive and not self.drain_pending():
                    step = getattr(self._last, "step", getattr(self._last, "last_step", 0))
                    yield Failed(
                        step=step or 0,
                        reason="the training process is gone "
                        "without finishing (killed?); `torchdeck resume` continues it",
                    )
                    return
            await asyncio.sleep(self.poll_s)

    def drain_pending(self) -> bool:
        try:
            return (self.run_dir / EVENTS_FILE).stat().st_size > self._tail.offset
        except FileNotFoundError:
            return False

    def pause(self) -> None:
        send_command(self.run_dir, "pause")

    def resume(self) -> None:
        send_command(self.run_dir, "resume")

    def stop(self) -> None:
        send_command(self.run_dir, "stop")

    def set_lr(self, lr: float) -> None:
        send_command(self.run_dir, "set_lr", float(lr))
