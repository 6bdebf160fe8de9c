"""Going on with a run that diverged, failed or was killed, from the app: only what can work is
offered (engine.resume.recovery_options), with the step it goes back to and a tenth of the
last stable lr; the trainer's notice and a failed job's reason are shown; rate and ETA leave
out pauses and the warm-up. Pilot tests wait for the state they assert, never a fixed pause.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import Button, Input, Static

from engine import events as ev
from engine.errors import RunDirError
from engine.jobs import ReplayJob, ResumeJob
from engine.rate import RateMeter
from tui.app import make_app
from tui.modals import RecoveryDialog
from tui.panes.loss_plot import LossPlot
from tui.run_state import Follower
from tui.status import status_text
from tui_fakes import FakeEngine, fake_events, fake_recoveries, wait_for

SIZE = (120, 40)


@pytest.fixture(autouse=True)
def _user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _buttons(dialog: RecoveryDialog) -> list[str]:
    return [str(b.label) for b in dialog.query(Button)]


# --- against real runs (trained here, in this process; the options from the engine) -------

@pytest.fixture(scope="module")
def diverged(tmp_path_factory) -> dict[str, Path]:
    """kink at lr 5 diverges at step 29, before its first checkpoint (30 s); neuron-linear
    at lr 5 with a checkpoint at every flush diverges after some."""
    from engine.api import run_sync
    from engine.presets import resolve_config

    root = tmp_path_factory.mktemp("recovery") / "runs"
    made: dict[str, Path] = {}
    for key, preset, sets in (
        ("no-ckpt", "kink", ["optim.lr=5"]),
        ("ckpt", "neuron-linear", ["optim.lr=5", "train.checkpoint_every_s=0"]),
    ):
        seen: list = []
        run_sync(resolve_config(preset, sets), root, sinks=[seen.append])
        made[key] = Path(seen[0].run_dir)
        assert seen[-1].status == "diverged"
    assert not (made["no-ckpt"] / "checkpoints" / "last.pt").exists()
    return made


def _recording(app) -> list:
    started: list = []
    app.controller.start_job = lambda job, note="": started.append((job, note))
    return started


async def test_a_run_diverged_before_any_checkpoint_gets_no_resume_offer(diverged):
    run_dir = diverged["no-ckpt"]
    app = make_app(runs_dir=run_dir.parent, tick_s=0.1, background_delay_s=0.0,
                   attach=str(run_dir))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RecoveryDialog), what="the offer")
        started = _recording(app)
        dialog = app.screen
        labels = _buttons(dialog)
        assert not any("Resume" in label for label in labels), labels
        assert labels[0].startswith("Start again from step 0") and "Replay" in labels[1]
        assert dialog.query_one("#recovery-lr", Input).value == "0.5"  # lr 5 / 10
        run = app.controller.run_state
        assert run.state == "diverged" and run.step == 29 and run.epoch == 3  # the record's
        await pilot.press("enter")  # the focused button: start again at lr 0.5
        await wait_for(pilot, lambda: started, what="the job")
        job, note = started[0]
        assert isinstance(job, ResumeJob) and job.source == "fresh"
        assert job.overrides == ("optim.lr=0.5",) and Path(job.ref) == run_dir
        assert note == "starting again from step 0 with lr 0.5…"


async def test_with_a_checkpoint_the_dialog_names_the_step_it_goes_back_to(diverged):
    run_dir = diverged["ckpt"]
    app = make_app(runs_dir=run_dir.parent, tick_s=0.1, background_delay_s=0.0,
                   attach=str(run_dir))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RecoveryDialog), what="the offer")
        started = _recording(app)
        dialog = app.screen
        options = dialog.options
        assert [o.kind for o in options[:1]] == ["resume"]
        first = options[0]
        reached = app.controller.run_state.step
        assert first.reached == reached and first.step < reached
        labels = _buttons(dialog)
        assert f"back to step {first.step:,} of {reached:,}" in labels[0]
        assert dialog.query_one("#recovery-lr", Input).value == "0.5"
        await pilot.press("down")  # the next way: its own lr shows until the field is edited
        await pilot.press("enter")
        await wait_for(pilot, lambda: started, what="the job")
        job, note = started[0]
        assert job == options[1].job and note.startswith("resuming from step")


# --- the app's side, against the fake engine ---------------------------------------------

def _app(tmp_path, engine):
    return make_app(runs_dir=tmp_path / "runs", engine=engine, clock=lambda: 100.0,
                    tick_s=60.0, background_delay_s=0.0)


def _diverged_events(run_dir, config):
    out = fake_events(run_dir, config, steps=100)
    out.append(ev.Finished(status="diverged", step=101, summary={
        "reason": "diverged at step 101: the loss became nan", "diverged_step": 101,
        "diverged_epoch": 11, "steps": 101, "epochs": 10}))
    return out


async def _start(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.press("s")
    await pilot.app.workers.wait_for_complete()
    pilot.app.controller.tick()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_no_checkpoint_dialog_offers_fresh_and_replay_only(tmp_path):
    engine = FakeEngine(events=_diverged_events)
    engine.recoveries = lambda d: fake_recoveries(d, checkpoint=False)
    app = _app(tmp_path, engine)
    async with app.run_test(size=SIZE) as pilot:
        await _start(pilot)
        dialog = app.screen
        assert isinstance(dialog, RecoveryDialog)
        assert _buttons(dialog) == ["Start again from step 0, in this run's folder",
                                    "Replay as a new run (same config and lr changes)",
                                    "Not now"]
        dialog.query_one("#recovery-lr", Input).value = "0.002"  # edited: kept
        await pilot.press("down", "enter")  # replay, at the edited lr
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(engine.jobs[-1], ReplayJob)
        assert engine.jobs[-1].overrides == ("optim.lr=0.002",)


async def test_the_counters_of_a_diverged_run_are_the_records(tmp_path):
    app = _app(tmp_path, FakeEngine(events=_diverged_events))
    async with app.run_test(size=SIZE) as pilot:
        await _start(pilot)
        run = app.controller.run_state
        assert (run.step, run.epoch) == (101, 11)  # diverged_step, diverged_epoch
        await pilot.press("escape")
        await pilot.pause()
        status = str(app.query_one("#status", Static).render())
        assert "step 101/500" in status and "ep 11/50" in status


async def test_a_job_that_cannot_start_shows_the_run_again_and_says_why(tmp_path):
    engine = FakeEngine(events=_diverged_events)
    app = _app(tmp_path, engine)
    async with app.run_test(size=SIZE) as pilot:
        await _start(pilot)
        assert isinstance(app.screen, RecoveryDialog)
        engine.fail_start = RunDirError("run x: no checkpoints/best.pt to resume from")
        await pilot.press("enter")
        # the run is shown again (the fake's follow: its whole history, finished)
        await wait_for(pilot, lambda: len(engine.handles) == 2
                       and app.controller.run_state.state == "finished", what="the run again")
        status = str(app.query_one("#status", Static).render())
        assert "FAILED" not in status and "no checkpoints/best.pt" in status
        assert app.query_one(LossPlot).model.train.total > 0  # the plots are not wiped
        assert "no checkpoints/best.pt" in app.main_screen.message
        assert not isinstance(app.screen, RecoveryDialog)  # not offered again at once
        assert any("no checkpoints/best.pt" in str(n.message) for n in app._notifications)


async def test_a_restart_from_step_0_tells_the_trainers_notice(tmp_path):
    engine = FakeEngine()  # a resume job whose run starts at step 0: it had no checkpoint
    app = _app(tmp_path, engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.controller.start_job(ResumeJob("runs/20250101-000000-line"), "resuming…")
        await app.workers.wait_for_complete()
        await pilot.pause()
        notes = [str(n.message) for n in app._notifications]
        assert any("20250101-000000-line: no checkpoint: restarting from step 0" in n
                   for n in notes), notes
        assert app.main_screen.message == ""  # "resuming…" is done: the numbers show


async def test_a_failed_run_says_why_in_the_status_line(tmp_path):
    def events(run_dir, config):
        return [*fake_events(run_dir, config, steps=100),
                ev.Failed(step=100, reason="no space left on device (runs/x/events.jsonl)",
                          summary={"steps": 100, "epochs": 10})]

    app = _app(tmp_path, FakeEngine(events=events))
    async with app.run_test(size=SIZE) as pilot:
        await _start(pilot)
        status = str(app.query_one("#status", Static).render())
        assert "FAILED" in status and "no space left on device" in status
        assert any("no space left" in str(n.message) for n in app._notifications)


# --- rate and ETA: pauses and warm-up left out (the events' training time, no clock) -----

def test_rate_meter_leaves_out_warm_up_and_follows_a_window():
    meter = RateMeter(window_s=10.0)
    meter.add(2.0, 10)  # the first flush: 2 s for 10 steps of warm-up
    assert meter.steps_per_s is None and meter.eta_s(1000) is None
    meter.add(3.0, 110)
    assert meter.steps_per_s == 100.0  # from the first flush on: the warm-up left out
    assert meter.eta_s(1000) == 8.9
    for t in range(4, 30):
        meter.add(float(t), 110 + (t - 3) * 50)  # slower now: 50 steps/s
    assert meter.steps_per_s == pytest.approx(50.0)
    meter.reset()
    assert meter.steps_per_s is None


def _steps(first: int, n: int, elapsed: float) -> ev.StepMetrics:
    # the engine's own figure (since the segment's start) is deliberately off
    return ev.StepMetrics(first_step=first, epoch=1, losses=(0.5,) * n, lr=0.1,
                          elapsed_s=elapsed, samples_per_s=40.0, steps_per_s=10.0)


def test_a_pause_does_not_slow_the_rate_or_stretch_the_eta():
    follower = Follower(clock=lambda: 0.0)
    started = ev.RunStarted(run_id="r", preset="p", run_dir="d", device="cpu",
                            task="regression", total_steps=10_000, total_epochs=1,
                            steps_per_epoch=10_000, batch_size=4, lr=0.1)
    follower.apply([started, _steps(1, 3, 1.5)])  # warm-up: 3 steps in 1.5 s
    run = follower.run
    assert run.steps_per_s == 0.0 and run.eta_s is None  # not known yet: no 3:49:22
    follower.apply([_steps(4, 1000, 2.5)])
    assert run.steps_per_s == 1000.0 and run.samples_per_s == 4000.0
    follower.apply([ev.Paused(step=1003)])
    assert run.state == "paused" and run.eta_s is None
    # a long pause: the training time (elapsed_s) stands still meanwhile
    follower.apply([ev.Resumed(step=1003), _steps(1004, 1000, 3.5)])
    assert run.steps_per_s == 1000.0
    assert run.eta_s == pytest.approx((10_000 - 2003) / 1000.0)
    text = status_text(run, now=0.0).plain
    assert "1.0k it/s" in text and "ETA 0:08" in text


async def test_status_line_rate_survives_a_pause(tmp_path):
    class Clock:
        t = 100.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()
    app = make_app(runs_dir=tmp_path / "runs", engine=FakeEngine(), clock=clock, tick_s=60.0,
                   background_delay_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        await _start(pilot)
        handle = app.controller.handle
        await pilot.press("p")
        app.controller.tick()
        await pilot.pause()
        clock.t += 3600  # an hour paused
        await pilot.press("r")
        handle._buffer.append(ev.StepMetrics(first_step=401, epoch=41, losses=(0.1,) * 50,
                                             lr=0.01, elapsed_s=4.01, samples_per_s=0.1,
                                             steps_per_s=0.01))
        app.controller.tick()
        await pilot.pause()
        run = app.controller.run_state
        assert run.state == "running" and run.steps_per_s == pytest.approx(100.0)
        status = str(app.query_one("#status", Static).render())
        assert "ETA 0:00" in status and "100 it/s" in status  # 50 steps left


def test_spawned_jobs_are_followed_with_the_summary_history(tmp_path, monkeypatch):
    from engine import jobs
    from tui.engine_port import RealEngine

    run_dir = tmp_path / "runs" / "20250101-000000-line"
    run_dir.mkdir(parents=True)
    monkeypatch.setattr(jobs, "start_detached",
                        lambda job: jobs.Detached("20250101-000000-line", run_dir, 1))
    handle = asyncio.run(RealEngine().spawn(ResumeJob(str(run_dir))))
    try:
        assert handle.history == "summary" and handle.pid == 1
    finally:
        handle.close()


def test_a_new_run_is_followed_event_by_event(tmp_path, monkeypatch):
    from engine import jobs
    from tui.engine_port import RealEngine

    run_dir = tmp_path / "runs" / "20250101-000000-line"
    run_dir.mkdir(parents=True)
    monkeypatch.setattr(jobs, "start_detached",
                        lambda job: jobs.Detached("20250101-000000-line", run_dir, 1))
    handle = asyncio.run(RealEngine().spawn(jobs.TrainJob({})))
    try:
        assert handle.history == "events"
    finally:
        handle.close()


async def test_a_retry_that_diverged_again_gets_a_tenth_of_its_rate(tmp_path):
    from tui.engine_port import Recovery

    engine = FakeEngine(events=_diverged_events)  # it diverged at lr 0.01
    # its checkpoint was taken at lr 0.1: the engine proposes 0.01, the rate that diverged
    engine.recoveries = lambda d: [Recovery("resume", "last", 90, 0.01, 101, "",
                                            ResumeJob(d, overrides=("optim.lr=0.01",),
                                                      source="last"))]
    app = _app(tmp_path, engine)
    async with app.run_test(size=SIZE) as pilot:
        await _start(pilot)
        dialog = app.screen
        assert isinstance(dialog, RecoveryDialog)
        assert dialog.query_one("#recovery-lr", Input).value == "0.001"
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert engine.jobs[-1].overrides == ("optim.lr=0.001",)
        assert engine.jobs[-1].source == "last"


async def test_the_runs_screen_says_why_a_run_failed(tmp_path):
    from tui.engine_port import RunRow
    from tui.screens.runs import RunsScreen

    engine = FakeEngine()
    engine.run_rows = [RunRow(id="20250101-000000-line", path=str(tmp_path / "r"),
                              status="failed", preset="line", steps=10, lr=0.01,
                              reason="no space left on device (runs/r/events.jsonl)")]
    app = _app(tmp_path, engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded
                       and "no space left" in str(app.screen.query_one("#runs-info",
                                                                       Static).render()),
                       what="the info line")
        info = str(app.screen.query_one("#runs-info", Static).render())
        assert info == ("20250101-000000-line: failed, lr 0.01: no space left on device "
                        "(runs/r/events.jsonl)")
