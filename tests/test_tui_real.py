"""Pilot tests of the app driving real (tiny) training runs through the engine."""

from __future__ import annotations

import asyncio
import time
import tomllib
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from tui.app import make_app
from tui.panes.fit_view import FitView
from tui.panes.inspector import ParamTable
from tui.panes.loss_plot import LossPlot
from tui.panes.params_form import ParamsForm
from tui.panes.presets import PresetsPane

SIZE = (120, 40)

# kink, reporting fast so that a test sees several updates within a second
QUICK_KINK = """
name = "quick-kink"
title = "Kink, reporting often"
task = "regression"

[data]
source = "formula"
x = "arange(-20, 20, 2)"
y = "where(x >= 0, 2 * x + 1, 0)"

[model]
layers = [
    { type = "Linear", in_features = 1, out_features = 1 },
    { type = "ReLU" },
    { type = "Linear", in_features = 1, out_features = 1 },
]

[optim]
name = "sgd"
lr = 0.001

[train]
epochs = 20000
batch_size = 2
loss = "half_mse"
seed = 1
log_every_s = 0.05
stats_every_s = 0.1
"""

BOOM_MODULE = """
import torch

class Boom(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls > 30:
                raise RuntimeError("boom: the model broke at call 31")
        return self.lin(x)

def make():
    return Boom()
"""

BOOM_PRESET = """
name = "boom"
task = "regression"

[data]
source = "formula"
x = "arange(-20, 20, 2)"
y = "2 * x"

[model]
factory = "tui_boom_model:make"

[optim]
name = "sgd"
lr = 0.001

[train]
epochs = 100
batch_size = 2
loss = "mse"
log_every_s = 0.05
"""

BROKEN_PRESET = """
name = "broken"
task = "regression"
[optim]
lr = "fast"
"""


@pytest.fixture(autouse=True)
def _quick_idle(monkeypatch):
    """Pilot waits until the process looks idle (up to 1 s per key), which it never does while a
    training thread works; a short fixed pause is enough for these tests."""

    async def short_wait(min_sleep: float = 0.0, max_sleep: float = 1.0) -> None:
        await asyncio.sleep(0.02)

    monkeypatch.setattr("textual.pilot.wait_for_idle", short_wait)
    monkeypatch.setattr("textual.app.wait_for_idle", short_wait)


@pytest.fixture
def presets_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "quick-kink.toml").write_text(QUICK_KINK)
    (folder / "boom.toml").write_text(BOOM_PRESET)
    (folder / "broken.toml").write_text(BROKEN_PRESET)
    (tmp_path / "tui_boom_model.py").write_text(BOOM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return folder


async def wait_for(pilot, condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; state {pilot.app.run_state}")
        await pilot.pause(0.05)


def run_toml(app) -> dict:
    with open(Path(app.handle.run_dir) / "run.toml", "rb") as fh:
        return tomllib.load(fh)


async def test_real_run_edit_start_watch_pause_resume_lr_stop(tmp_path, presets_dir):
    app = make_app(runs_dir=tmp_path / "runs", preset_dirs=[presets_dir], tick_s=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        pane = app.query_one(PresetsPane)
        broken = next(p for p in pane.presets if p.name == "broken")
        assert broken.error and "missing section" in broken.error
        assert pane.select("broken")
        await pilot.pause()
        assert str(broken.path) in str(app.query_one("#preset-detail", Static).render())
        assert pane.select("quick-kink")
        await pilot.pause()
        app.query_one("#f-lr", Input).value = "0.002"
        await pilot.pause()
        assert app.query_one(ParamsForm).config["optim"]["lr"] == 0.002
        await pilot.press("s")
        plot, table = app.query_one(LossPlot), app.query_one(ParamTable)
        await wait_for(pilot, lambda: plot.model.train.total > 0 and table.row_count > 0)
        assert app.run_state.state == "running"
        assert run_toml(app)["config"]["optim"]["lr"] == 0.002  # the edit is in the run
        seen_steps, seen_inspector = plot.model.train.total, app.query_one("#inspector").step
        await wait_for(pilot, lambda: plot.model.train.total > seen_steps
                       and app.query_one("#inspector").step > seen_inspector)
        assert app.query_one(FitView).fit is not None  # 1-D regression: the fit view

        await pilot.press("p")
        await wait_for(pilot, lambda: app.run_state.state == "paused")
        assert run_toml(app)["run"]["status"] == "paused"
        paused_at = plot.model.train.total
        await asyncio.sleep(0.3)
        app.tick()
        assert plot.model.train.total == paused_at
        await pilot.press("r")
        await wait_for(pilot, lambda: app.run_state.state == "running")

        await pilot.press("l")
        await pilot.pause()
        app.screen.query_one("#lr-input", Input).value = "0.0005"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.run_state.lr == 0.0005)
        await pilot.press("x")
        await wait_for(pilot, lambda: app.run_state.state == "stopped")
        meta = run_toml(app)
        assert meta["run"]["status"] == "stopped"
        assert meta["changes"][0]["key"] == "optim.lr"
        assert meta["changes"][0]["new"] == 0.0005 and meta["changes"][0]["old"] == 0.002
        assert "stopped" in str(app.query_one("#status", Static).render()).lower()


async def test_engine_failure_shows_a_message_and_run_toml_says_failed(tmp_path, presets_dir):
    app = make_app(runs_dir=tmp_path / "runs", preset_dirs=[presets_dir], tick_s=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.query_one(PresetsPane).select("boom")
        await pilot.pause()
        await pilot.press("s")
        await wait_for(pilot, lambda: app.run_state.state == "failed")
        assert "boom: the model broke" in app.message
        assert "boom: the model broke" in str(app.query_one("#status", Static).render())
        meta = run_toml(app)
        assert meta["run"]["status"] == "failed"
        assert "boom" in meta["summary"]["reason"]
        assert app.is_running
