"""The run controller on its own: the typed messages it posts for start, attach, jobs, the end of
a run, a dead process and failures; a screen that only records them (no panes)."""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.screen import Screen

from engine import events as ev
from engine.errors import DeviceError
from engine.jobs import ResumeJob
from tui.app import make_app
from tui.controller import (
    RunCleared,
    RunController,
    RunEnded,
    RunFailedToStart,
    RunOpened,
    RunUpdated,
)
from tui_fakes import FAKE_PRESETS, FakeEngine, fake_events

CONFIG = {**FAKE_PRESETS["line"]}


class Recorder(Screen):
    def __init__(self, engine: FakeEngine) -> None:
        super().__init__()
        self.controller = RunController(self, engine, "runs", clock=lambda: 100.0, tick_s=3600)
        self.got: list[Any] = []

    def on_run_cleared(self, message: RunCleared) -> None:
        self.got.append(message)

    def on_run_opened(self, message: RunOpened) -> None:
        self.got.append(message)

    def on_run_updated(self, message: RunUpdated) -> None:
        self.got.append(message)

    def on_run_ended(self, message: RunEnded) -> None:
        self.got.append(message)

    def on_run_failed_to_start(self, message: RunFailedToStart) -> None:
        self.got.append(message)


class Host(App):
    def __init__(self, engine: FakeEngine) -> None:
        super().__init__()
        self.recorder = Recorder(engine)

    def get_default_screen(self) -> Screen:
        return self.recorder


async def _settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _kinds(got: list[Any]) -> list[str]:
    return [type(m).__name__ for m in got]


async def test_start_posts_cleared_opened_updated_then_ended_on_stop():
    engine = FakeEngine()
    app = Host(engine)
    async with app.run_test() as pilot:
        screen, ctl = app.recorder, app.recorder.controller
        ctl.start(dict(CONFIG))
        assert ctl.run_state.state == "starting"  # at once, before the worker ran
        await _settle(pilot)
        assert _kinds(screen.got) == ["RunCleared", "RunOpened", "RunUpdated"]
        cleared, opened, updated = screen.got
        assert cleared.task == "regression" and cleared.detached_from == ""
        assert opened.how == "start"
        assert updated.redraw and updated.update.started is not None
        assert sum(len(losses) for _, losses in updated.update.losses) == 400
        assert ctl.live and ctl.run_state.state == "running"
        screen.got.clear()
        ctl.tick()  # nothing new while a run trains: nothing to say until a redraw is due
        await pilot.pause()
        assert all(m.update is None for m in screen.got)
        screen.got.clear()
        ctl.stop()
        assert ctl.run_state.state == "stopping"
        ctl.tick()
        await pilot.pause()
        assert _kinds(screen.got) == ["RunUpdated", "RunEnded"]
        assert screen.got[0].update.state_changed and screen.got[0].redraw
        ended = screen.got[1]
        assert ended.event.type == "finished" and ended.event.status == "stopped"
        assert not ended.quitting
        assert ctl.run_state.state == "stopped" and not ctl.live


async def test_a_start_that_fails_is_one_message_and_a_failed_state():
    engine = FakeEngine(fail_start=DeviceError("--device cuda:3: there is no cuda:3 here"))
    app = Host(engine)
    async with app.run_test() as pilot:
        screen, ctl = app.recorder, app.recorder.controller
        ctl.start(dict(CONFIG))
        await _settle(pilot)
        assert _kinds(screen.got) == ["RunCleared", "RunFailedToStart"]
        text = "cannot start the run: --device cuda:3: there is no cuda:3 here"
        assert screen.got[1].text == text
        assert ctl.run_state.state == "failed" and "no cuda:3" in ctl.run_state.reason
        assert ctl.handle is None and not ctl.live


async def test_attach_reads_the_history_then_says_the_run_ended():
    engine = FakeEngine()
    app = Host(engine)
    async with app.run_test() as pilot:
        screen, ctl = app.recorder, app.recorder.controller
        ctl.attach("runs/some-run")
        await _settle(pilot)
        kinds = _kinds(screen.got)
        assert kinds[:4] == ["RunCleared", "RunOpened", "RunUpdated", "RunEnded"]
        assert screen.got[0].note == "opening some-run…"
        assert screen.got[1].how == "attach"
        assert screen.got[2].redraw and screen.got[2].update.params is not None
        assert screen.got[3].event.status == "finished"
        assert ctl.run_state.state == "finished"


async def test_a_dead_process_ends_the_run_through_the_handle_event():
    def events(run_dir, config):  # the handle's word: the process died without a final event
        return [*fake_events(run_dir, config, steps=100), ev.ProcessGone(step=100)]

    app = Host(FakeEngine(events=events))
    async with app.run_test() as pilot:
        screen, ctl = app.recorder, app.recorder.controller
        ctl.start(dict(CONFIG))
        await _settle(pilot)
        ended = [m for m in screen.got if isinstance(m, RunEnded)]
        assert len(ended) == 1 and ended[0].event.type == "gone"
        assert ctl.run_state.state == "killed"
        assert "without finishing" in ctl.run_state.reason


async def test_a_resume_job_ignores_the_earlier_end_and_new_runs_detach_the_old():
    def events(run_dir, config):  # the history of a diverged run, then its resumed start
        first = fake_events(run_dir, config, steps=100)
        resumed = ev.RunStarted(**{**first[0].__dict__, "start_step": 50, "start_epoch": 5})
        return [*first, ev.Finished(status="diverged", step=100, summary={}), resumed]

    engine = FakeEngine(events=events)
    app = Host(engine)
    async with app.run_test() as pilot:
        screen, ctl = app.recorder, app.recorder.controller
        ctl.start_job(ResumeJob("runs/20250101-000000-line", None, ()), "resuming…")
        await _settle(pilot)
        assert screen.got[0].note == "resuming…"
        assert not any(isinstance(m, RunEnded) for m in screen.got)
        assert ctl.run_state.state == "running" and ctl.live
        first = ctl.handle
        screen.got.clear()
        ctl.attach("runs/other")  # the resumed run goes on training: detached, not stopped
        await _settle(pilot)
        assert screen.got[0].detached_from == "20250101-000000-line"
        assert first.closed and first.calls == []


async def test_stop_and_quit_marks_the_end_as_quitting():
    app = Host(FakeEngine())
    async with app.run_test() as pilot:
        screen, ctl = app.recorder, app.recorder.controller
        ctl.start(dict(CONFIG))
        await _settle(pilot)
        ctl.quit_when_ended = True
        ctl.stop()
        ctl.tick()
        await pilot.pause()
        assert [m.quitting for m in screen.got if isinstance(m, RunEnded)] == [True]


async def test_quitting_the_app_closes_the_handle(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    engine = FakeEngine()
    app = make_app(runs_dir=tmp_path / "runs", engine=engine, clock=lambda: 100.0,
                   tick_s=3600.0, background_delay_s=0.0)
    async with app.run_test() as pilot:
        await _settle(pilot)
        await pilot.press("s")
        await _settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("enter")  # Detach
        await pilot.pause()
    assert engine.handles[0].closed and engine.handles[0].calls == []


async def test_the_restart_notice_comes_from_the_new_start_not_the_history():
    def events(run_dir, config):  # the history (summary) holds the first run's start
        first = fake_events(run_dir, config, steps=100)
        history = ev.History(last_step=100, offset=0, events=(first[0],))
        resumed = ev.RunStarted(**{**first[0].__dict__, "start_step": 50, "start_epoch": 5})
        return [history, resumed]

    def restarted(run_dir, config):  # no checkpoint: the run starts again from step 0
        return [ev.History(last_step=0, offset=0), fake_events(run_dir, config)[0]]

    for make, expected in ((events, ""), (restarted, "no checkpoint: restarting from step 0")):
        app = Host(FakeEngine(events=make))
        async with app.run_test() as pilot:
            ctl = app.recorder.controller
            ctl.start_job(ResumeJob("runs/20250101-000000-line"), "resuming…")
            await _settle(pilot)
            assert ctl.run_state.state == "running"
            assert (expected in ctl.notice) if expected else ctl.notice == "", ctl.notice


async def test_a_job_that_cannot_start_opens_its_run_again_with_the_reason():
    engine = FakeEngine(fail_start=DeviceError("no checkpoints/best.pt to resume from"))
    app = Host(engine)
    async with app.run_test() as pilot:
        screen, ctl = app.recorder, app.recorder.controller
        ctl.start_job(ResumeJob("runs/some-run"), "resuming…")
        await _settle(pilot)
        kinds = _kinds(screen.got)
        assert kinds[:3] == ["RunCleared", "RunFailedToStart", "RunCleared"], kinds
        opened = next(m for m in screen.got if isinstance(m, RunOpened))
        assert opened.how == "attach" and "no checkpoints/best.pt" in opened.note
        ended = next(m for m in screen.got if isinstance(m, RunEnded))
        assert "no checkpoints/best.pt" in ended.note  # the screen offers nothing again
        assert ctl.run_state.state == "finished" and ctl.run_state.step == 400


async def test_a_fresh_start_tells_its_notice_also_from_the_history():
    def events(run_dir, config):  # the new start already in the log when the handle read it
        return [ev.History(last_step=0, offset=0, events=(fake_events(run_dir, config)[0],))]

    app = Host(FakeEngine(events=events))
    async with app.run_test() as pilot:
        ctl = app.recorder.controller
        ctl.start_job(ResumeJob("runs/20250101-000000-line", source="fresh"), "starting…")
        await _settle(pilot)
        assert "starting again from step 0" in ctl.notice


async def test_a_resumed_run_that_ended_before_it_was_first_read_still_ends():
    def events(run_dir, config):  # its start and its end both in the history
        first = fake_events(run_dir, config, steps=100)
        resumed = ev.RunStarted(**{**first[0].__dict__, "start_step": 21, "start_epoch": 2})
        end = ev.Finished(status="diverged", step=22, summary={"diverged_step": 22})
        return [ev.History(last_step=22, offset=0, events=(resumed, end))]

    app = Host(FakeEngine(events=events))
    async with app.run_test() as pilot:
        screen, ctl = app.recorder, app.recorder.controller
        ctl.start_job(ResumeJob("runs/20250101-000000-line", source="last"), "resuming…")
        await _settle(pilot)
        assert not any(isinstance(m, RunEnded) for m in screen.got)  # an earlier end?
        ctl.handle.finished = True  # the stream is over: nothing came after it
        ctl.tick()
        await pilot.pause()
        ended = [m for m in screen.got if isinstance(m, RunEnded)]
        assert len(ended) == 1 and ended[0].event.status == "diverged"
        assert ctl.run_state.state == "diverged" and ctl.run_state.step == 22
