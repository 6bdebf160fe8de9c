"""Opening a long run (issue 11): the app attaches through the real engine to a run of
2*10^5 steps logged in today's format (no summary yet) and shows the whole curve from its
summary, with a one-step spike still visible in the plotted max."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from textual.widgets import Static

from engine import events as ev
from engine.presets import resolve_config
from engine.rundir import EVENTS_FILE, RunDir
from tui.app import make_app
from tui.panes.loss_plot import LossModel, LossPlot
from tui.run_state import Follower
from tui_fakes import wait_for

SIZE = (120, 40)
N = 200_000
CHUNK = 1000
SPIKE_AT = 123_457
SPIKE = 50.0


@pytest.fixture(autouse=True)
def _user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(autouse=True)
def _quick_idle(monkeypatch):
    async def short_wait(min_sleep: float = 0.0, max_sleep: float = 1.0) -> None:
        await asyncio.sleep(0.02)

    monkeypatch.setattr("textual.pilot.wait_for_idle", short_wait)
    monkeypatch.setattr("textual.app.wait_for_idle", short_wait)


def _loss(step: int) -> float:
    return SPIKE if step == SPIKE_AT else 2.0 * math.exp(-step / N * 4) + 0.01 * (step % 7)


def build_run(runs_dir: Path, n: int = N) -> RunDir:
    """A finished kink run of `n` steps: StepMetrics lines of 1 000 losses and an EpochEnd
    per 1 000 steps, written straight to events.jsonl (no summary: a run from before them)."""
    config = resolve_config("kink", {"train.device": "cpu"})
    run = RunDir.create(runs_dir, "kink", config, "cpu")
    epochs = n // CHUNK
    with open(run.path / EVENTS_FILE, "w", buffering=1 << 20) as fh:
        fh.write(ev.event_to_json(ev.RunStarted(
            run_id=run.id, preset="kink", run_dir=str(run.path), device="cpu",
            task="regression", total_steps=n, total_epochs=epochs, steps_per_epoch=CHUNK,
            batch_size=2, lr=0.001)) + "\n")
        for e in range(epochs):
            first = e * CHUNK + 1
            losses = tuple(_loss(s) for s in range(first, first + CHUNK))
            fh.write(ev.event_to_json(ev.StepMetrics(
                first_step=first, epoch=e + 1, losses=losses, lr=0.001, elapsed_s=first / 2000,
                samples_per_s=4000.0, steps_per_s=2000.0)) + "\n")
            fh.write(ev.event_to_json(ev.EpochEnd(
                epoch=e + 1, step=first + CHUNK - 1, train_loss=losses[-1],
                val_loss=losses[-1] * 1.1)) + "\n")
        summary = {"final_loss": _loss(n), "steps": n, "epochs": epochs}
        fh.write(ev.event_to_json(ev.Finished(status="finished", step=n, summary=summary))
                 + "\n")
    run.update("finished", summary=summary)
    return run


async def test_attach_shows_the_whole_curve_of_a_long_run_with_its_spike(tmp_path):
    run = build_run(tmp_path / "runs")
    app = make_app(runs_dir=tmp_path / "runs", tick_s=0.1, background_delay_s=0.0,
                   attach=str(run.path))
    async with app.run_test(size=SIZE) as pilot:
        plot = app.query_one(LossPlot)
        await wait_for(pilot, lambda: plot.model.train.total == N, what="the whole curve")
        state = app.controller.run_state
        assert state.state == "finished" and state.step == N and state.preset == "kink"
        model = plot.model
        assert len(model.train) <= model.train.capacity and model.train.width > 1
        assert model.shows_envelope
        traces = model.loss_traces(plot.content_region.width)
        top = next(t for t in traces if t.label == "max")
        assert max(top.ys) == SPIKE  # hidden in the mean of its bucket, not in the max
        xs, means = model.train.points()
        assert max(means) < SPIKE / 10 and xs[-1] > N - model.train.width
        assert model.recent.points()[0][-1] == N  # the newest raw steps, exactly
        assert len(model.val) > 0 and model.val.total == N // CHUNK
        status = str(app.query_one("#status", Static).render())
        assert "FINISHED" in status
        assert "min/max" in str(plot.border_subtitle)


def test_history_then_new_steps_append_after_the_summary():
    """A History event seeds the series; the steps logged after it go on from last_step."""
    follower = Follower(clock=lambda: 0.0)
    started = ev.RunStarted(run_id="r", preset="kink", run_dir="/r", device="cpu",
                            task="regression", total_steps=10_000, total_epochs=10,
                            steps_per_epoch=1000, batch_size=2, lr=0.001)
    ends = (*range(128, 4000, 128), 4000)  # the last bucket holds fewer steps
    history = ev.History(
        last_step=4000, offset=1, per_point=128, steps=ends,
        loss_min=tuple(0.5 for _ in ends), loss_max=tuple(9.0 if e == 1024 else 1.0 for e in ends),
        loss_mean=tuple(0.75 for _ in ends), loss_last=tuple(0.75 for _ in ends),
        tail_steps=tuple(range(3489, 4001)), tail_losses=tuple(0.75 for _ in range(512)),
        lr_steps=(1,), lr=(0.001,), epochs=(1, 2, 3, 4), epoch_steps=(1000, 2000, 3000, 4000),
        train_loss=(1.0, 0.9, 0.8, 0.7), val_loss=(1.1, None, 0.85, 0.9), n_epochs=4,
        events=(started, ev.EpochEnd(epoch=4, step=4000, train_loss=0.7, val_loss=0.9)),
    )
    up = follower.apply([history])
    assert up.history is history and up.started is started and not up.epochs
    run = follower.run
    assert run.state == "running" and run.step == 4000 and run.best_val_loss == 0.85
    model = LossModel()
    model.load_history(history)
    assert model.train.total == 4000 and model.train.width == 128
    assert max(model.train.envelope(16)[2]) == 9.0
    assert model.val.total == 3 and model.recent.points()[0][-1] == 4000
    steps = ev.StepMetrics(first_step=4001, epoch=5, losses=(0.7,) * 200, lr=0.001,
                           elapsed_s=1.0, samples_per_s=1.0, steps_per_s=1.0)
    up = follower.apply([steps])
    for first, losses in up.losses:
        model.add_losses(first, losses)
    assert model.train.total == 4200 and follower.run.step == 4200
    assert model.recent.points()[0][-1] == 4200
    assert len(model.train) <= model.train.capacity
