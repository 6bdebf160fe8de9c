"""The run controller: follows one run at a time for the main screen and tells it what happened
in typed messages; the screen owns the panes and draws.

Runs train in their own process (a worker in its own session: quitting the app with Detach
leaves them training). Starting one, resuming or replaying one (a job), or opening one that
lives elsewhere (attach: its whole history, then live if it still trains) all end in a handle
following its run folder; the handle tails the folder in a thread and says when the training
process is gone (a ProcessGone event), so nothing here reads a run file or decides liveness.
A timer drains the handle a few times a second and folds the events into the run's state
(tui/run_state.py); redraws are paced (tui/pacing.py) so that drawing stays within its share
of a core.

Messages, posted to the screen in this order for a run:
    RunCleared         a new run is being prepared: forget the previous one's pictures
    RunOpened          the run is being followed now (after start, job or attach)
    RunUpdated         events arrived (data only) and/or it is time to redraw
    RunEnded           the run ended (finished, stopped, diverged, failed, or process gone)
    RunFailedToStart   starting, spawning or opening it failed (one line to show)

and, every SYSTEM_POLL_S, whether a run is followed or not:
    SystemSampled      the machine's figures (engine.system, sampled in a thread)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.message import Message
from textual.screen import Screen

from engine.jobs import Job, ResumeJob
from tui.engine_port import Engine
from tui.errors import user_message
from tui.pacing import RedrawPacer
from tui.run_state import Follower, RunState, Update

TICK_S = 0.2
# share of one core the app's drawing may take while a run trains: training runs in another
# process, so this is only what the app takes from the machine's cores (a CNN's intra-op
# threads use all of a small machine's), not from the training loop
REDRAW_BUDGET = 0.03
SYSTEM_POLL_S = 2.0


class RunCleared(Message):
    """The run followed so far is let go (a detached one goes on training)."""

    def __init__(self, task: str, note: str, detached_from: str) -> None:
        super().__init__()
        self.task = task  # of the run to come, if known
        self.note = note  # what is being done, for the status line
        self.detached_from = detached_from  # the id of a run left training, or ""


class RunOpened(Message):
    """Following a handle now; `how` is 'start', 'job' or 'attach'; `note`: what the status
    line says now ("" once "opening …" is done; why a job could not start, when its run is
    shown again)."""

    def __init__(self, how: str, note: str = "") -> None:
        super().__init__()
        self.how = how
        self.note = note


class RunUpdated(Message):
    """`update`: the events of one tick folded together (None if none came); `redraw`: time
    to draw what changed."""

    def __init__(self, update: Update | None, redraw: bool) -> None:
        super().__init__()
        self.update = update
        self.redraw = redraw


class RunEnded(Message):
    """The followed run ended: a Finished, Failed or ProcessGone event (not the earlier end of
    a run being resumed). `quitting`: the app quits once the run has ended."""

    def __init__(self, event: Any, quitting: bool, note: str = "") -> None:
        super().__init__()
        self.event = event
        self.quitting = quitting
        # a run shown again after a resume or replay of it could not start: why (the status
        # line keeps saying it; nothing is offered again)
        self.note = note


class RunFailedToStart(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class SystemSampled(Message):
    """CPU, RAM and GPU figures (an engine.system.SystemSample) of the followed run's process,
    or of the machine when none is followed."""

    def __init__(self, sample: Any) -> None:
        super().__init__()
        self.sample = sample


class RunController:
    """Follows runs for `screen`: its timers drain the handle, its workers start runs, and the
    messages above go to it."""

    def __init__(self, screen: Screen, engine: Engine, runs_dir: str | Path | None,
                 clock: Callable[[], float], tick_s: float = TICK_S) -> None:
        self.screen = screen
        self.engine = engine
        self.runs_dir = runs_dir
        self.tick_s = tick_s
        self.follower = Follower(clock)
        self.handle: Any = None
        self.pacer = RedrawPacer(min_interval=tick_s, budget=REDRAW_BUDGET)
        self.quit_when_ended = False  # the user chose "stop and quit"
        self._resuming = False  # following a resume job whose new start is not in yet
        self._held_end: Any = None  # an end seen while _resuming (see tick)
        self.system_poll_s = SYSTEM_POLL_S
        self._pid: int | None = None  # the followed run's worker, once known
        self._job: Job | None = None  # the resume or replay job followed, until it starts
        self.notice = ""  # the trainer's notice for the run just started ("" if none)
        self._attach_note = ""  # why the run is shown again (a job of it could not start)

    @property
    def run_state(self) -> RunState:
        return self.follower.run

    @property
    def live(self) -> bool:
        """A run is followed and not over: commands reach it."""
        return self.handle is not None and self.run_state.active

    @property
    def run_dir(self) -> str:
        """The followed run's folder: the handle's (the one in the events is where the run was
        made; it may have been moved or copied since)."""
        return str(getattr(self.handle, "run_dir", "") or "") or self.run_state.run_dir

    def begin(self) -> None:
        """Start the timers (once the screen is mounted)."""
        self.screen.set_interval(self.tick_s, self.tick)
        self.screen.set_interval(self.system_poll_s, self.poll_system)
        self.poll_system()

    # --- new runs -------------------------------------------------------------------------
    def start(self, config: dict[str, Any]) -> None:
        """Train `config` in a new worker process and follow it."""
        self._clear(config.get("task", ""))
        engine, runs_dir = self.engine, self.runs_dir
        self._open(lambda: engine.start(config, runs_dir), "start", "cannot start the run")

    def start_job(self, job: Job, note: str = "") -> None:
        """Resume or replay a run (engine.jobs) and follow it."""
        self._clear(note=note)
        self._resuming = isinstance(job, ResumeJob)
        self._job = job
        engine = self.engine
        self._open(lambda: engine.spawn(job), "job", "cannot start the run", back_to=job.ref)

    def attach(self, run_dir: str | Path, note: str = "") -> None:
        """Follow a run: its whole history so far, then live if its process still trains."""
        self._clear(note=note or f"opening {Path(run_dir).name}…")
        self._attach_note = note
        self.screen.run_worker(self._attach(run_dir, note), group="attach",
                               exit_on_error=False, exclusive=True)

    def _clear(self, task: str = "", note: str = "") -> None:
        detached = self.run_state.run_id if self.live else ""
        self.close()
        self.handle = None
        self.pacer.reset()
        self.follower.reset("starting")
        self._resuming = False
        self._held_end = None
        self._pid = None
        self._job = None
        self.notice = ""
        self._attach_note = ""
        self.screen.post_message(RunCleared(task, note, detached))

    def _open(self, make: Callable[[], Awaitable[Any]], how: str, what: str,
              back_to: str | None = None) -> None:
        """Start following what `make` gives; if it fails, say why and (`back_to`: the run a
        resume or replay came from) show that run again rather than an empty screen."""
        async def run() -> None:
            try:
                handle = await make()
            except Exception as err:
                self._failed(f"{what}: {user_message(err)}", user_message(err))
                if back_to:
                    self.attach(back_to, note=f"{what}: {user_message(err)}")
                return
            self._follow(handle, how)

        self.screen.run_worker(run(), group="start", exit_on_error=False, exclusive=True)

    def _follow(self, handle: Any, how: str) -> None:
        self.handle = handle
        self.run_state.run_dir = str(handle.run_dir or "")
        self.screen.post_message(RunOpened(how))
        if self.quit_when_ended:  # quit was asked for while preparing
            handle.stop()
        self.tick()

    async def _attach(self, run_dir: str | Path, note: str = "") -> None:
        # the handle puts the history as one summary event (engine.summary: the same cost
        # at any length), then what the log gains; an empty summary is no history
        try:
            handle = self.engine.follow(run_dir)
            # the history may be long: the handle reads it in its thread; wait in another
            await asyncio.to_thread(handle.wait_loaded)
        except Exception as err:
            self._failed(f"cannot open the run: {user_message(err)}", user_message(err))
            return
        events = handle.drain()
        self.handle = handle
        self.run_state.run_dir = str(run_dir)
        self.screen.post_message(RunOpened("attach", note))
        self._fold(events, redraw=True)
        if not any(e.type != "history" or e.events or e.last_step for e in events):
            self.run_state.state = "idle"
            self.screen.post_message(RunFailedToStart(
                f"{run_dir}: no events yet (a damaged or empty run)"))
        self.tick()

    def _failed(self, text: str, reason: str) -> None:
        self.run_state.state = "failed"
        self.run_state.reason = reason
        self.screen.post_message(RunFailedToStart(text))

    # --- following ------------------------------------------------------------------------
    def tick(self) -> None:
        """Drain what the run emitted since the last tick; say when to redraw."""
        events = self.handle.drain() if self.handle is not None else []
        self._fold(events)
        held = self._held_end
        if held is not None and not events and self._stream_over():
            # the end held back as a resumed run's earlier one was its own: the resumed
            # run ended before the follower first read its log (its start and end both in
            # the history), and nothing came after it
            self._held_end, self._resuming = None, False
            self.screen.post_message(RunEnded(held, self.quit_when_ended, self._attach_note))

    def _stream_over(self) -> bool:
        handle = self.handle
        ended = getattr(handle, "ended", None)
        return bool(ended) if ended is not None else not getattr(handle, "alive", True)

    def _fold(self, events: list[Any], redraw: bool = False) -> None:
        if self._job is not None:
            self._notice_of(events)
        up = self.follower.apply(events) if events else None
        ended = None
        if up is not None:
            if up.started is not None and up.ended is None:
                self._resuming = False  # the resumed run has started: its own end counts
                self._held_end = None
            if up.ended is not None:
                # the end decides what is dead (a short run may have one snapshot): show again
                up.params = self.follower.last_params
                if not self._resuming:  # not the earlier end of a run being resumed
                    ended = up.ended
                else:  # the earlier end, or (if nothing comes after it) the resumed run's
                    self._held_end = up.ended
        urgent = up is not None and (up.state_changed or up.started is not None
                                     or bool(up.lr_changes))
        if redraw or not self.run_state.active:
            redraw = True
        elif urgent or self.pacer.due():
            redraw = True
            self.pacer.drawn()
        if up is not None or redraw:
            self.screen.post_message(RunUpdated(up, redraw))
        if ended is not None:
            self.screen.post_message(RunEnded(ended, self.quit_when_ended, self._attach_note))

    def _notice_of(self, events: list[Any]) -> None:
        """The trainer's notice for a resume that starts again from step 0 (the run has no
        checkpoint yet, or a fresh start was chosen): the worker writes it to its own log;
        here the run's start says it. A start in the history may be the earlier run's,
        unless a fresh start was asked for (its log was emptied before the worker said so)."""
        job = self._job
        fresh = isinstance(job, ResumeJob) and job.source == "fresh"
        starts = [e for e in events if e.type == "run_started"] + [
            e for h in events if fresh and h.type == "history" for e in h.events
            if e.type == "run_started"]
        started = starts[0] if starts else None
        if started is None:
            return
        self._job = None
        if isinstance(job, ResumeJob) and started.start_step == 0:
            why = "starting again" if job.source == "fresh" else "no checkpoint: restarting"
            self.notice = (f"{started.run_id}: {why} from step 0 (same config and seed: "
                           "the same run)")

    def poll_system(self) -> None:
        """Sample the machine in a thread (psutil, NVML and run.toml reads stay off the event
        loop); at most one sampling at a time."""
        self.screen.run_worker(self._sample_system, thread=True, exit_on_error=False,
                               group="system", exclusive=True)

    def _sample_system(self) -> None:
        run = self.run_state
        pid = None
        if run.active or self.handle is not None:
            pid = getattr(self.handle, "pid", None) or self._pid or self._recorded_pid()
        sample = self.engine.system(pid if run.active else None, run.device or "cpu")
        used, total = getattr(sample, "gpu_mem_used", None), getattr(sample, "gpu_mem_total",
                                                                       None)
        if used is not None and total:
            run.device_memory = f"{used / 2**30:.1f}/{total / 2**30:.0f} GiB"
        self.screen.post_message(SystemSampled(sample))

    def _recorded_pid(self) -> int | None:
        """The pid in the followed run's run.toml (a run attached to: the handle has none)."""
        import tomllib

        run_dir = self.run_dir
        if not run_dir:
            return None
        try:
            with open(Path(run_dir) / "run.toml", "rb") as fh:
                pid = tomllib.load(fh).get("run", {}).get("pid")
        except (OSError, ValueError):
            return None
        self._pid = pid if isinstance(pid, int) else None
        return self._pid

    # --- commands to the run --------------------------------------------------------------
    def pause(self) -> None:
        self.handle.pause()

    def resume(self) -> None:
        self.handle.resume()

    def stop(self) -> None:
        self.handle.stop()
        self.run_state.state = "stopping"

    def set_lr(self, lr: float) -> None:
        self.handle.set_lr(lr)

    def close(self) -> None:
        """Stop following (the run itself goes on)."""
        if self.handle is not None:
            self.handle.close()
