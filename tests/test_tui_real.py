"""Pilot tests of the app driving real (tiny) training runs through the engine: each run is a
worker process (engine.procs.worker), and every worker a test starts is killed at its teardown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
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
from tui_fakes import kill_workers, wait_for

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
    # the worker processes import the boom model too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return folder


@pytest.fixture(autouse=True)
def reap(tmp_path: Path):
    """Every worker started under tmp_path/runs is killed at teardown, even on failure."""
    pids: list[int] = []
    yield pids
    kill_workers(tmp_path / "runs", pids)


def run_toml(app) -> dict:
    with open(Path(app.controller.handle.run_dir) / "run.toml", "rb") as fh:
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
        assert app.controller.run_state.state == "running"
        assert run_toml(app)["config"]["optim"]["lr"] == 0.002  # the edit is in the run
        seen_steps, seen_inspector = plot.model.train.total, app.query_one("#inspector").step
        await wait_for(pilot, lambda: plot.model.train.total > seen_steps
                       and app.query_one("#inspector").step > seen_inspector)
        assert app.query_one(FitView).fit is not None  # 1-D regression: the fit view

        await pilot.press("p")
        await wait_for(pilot, lambda: app.controller.run_state.state == "paused")
        assert run_toml(app)["run"]["status"] == "paused"
        paused_at = plot.model.train.total
        await asyncio.sleep(0.3)
        app.controller.tick()
        await pilot.pause()
        assert plot.model.train.total == paused_at
        await pilot.press("r")
        await wait_for(pilot, lambda: app.controller.run_state.state == "running")

        await pilot.press("l")
        await pilot.pause()
        app.screen.query_one("#lr-input", Input).value = "0.0005"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.controller.run_state.lr == 0.0005)
        await pilot.press("x")
        await wait_for(pilot, lambda: app.controller.run_state.state == "stopped")
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
        await wait_for(pilot, lambda: app.controller.run_state.state == "failed")
        assert "boom: the model broke" in app.main_screen.message
        assert "boom: the model broke" in str(app.query_one("#status", Static).render())
        meta = run_toml(app)
        assert meta["run"]["status"] == "failed"
        assert "boom" in meta["summary"]["reason"]
        assert app.is_running


def alive(pid: int) -> bool:
    from engine.rundir import process_alive

    return process_alive(pid)


def steps_logged(run_dir: Path) -> int:
    from engine.rundir import RunDir

    return max((e.last_step for e in RunDir(run_dir).read_events() if e.type == "steps"),
               default=0)


async def test_quit_detaches_by_default_and_the_run_goes_on(tmp_path, presets_dir, reap):
    app = make_app(runs_dir=tmp_path / "runs", preset_dirs=[presets_dir], tick_s=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.query_one(PresetsPane).select("quick-kink")
        await pilot.pause()
        await pilot.press("s")
        await wait_for(pilot, lambda: app.controller.handle is not None
                       and app.controller.run_state.step > 0)
        pid = app.controller.handle.pid
        reap.append(pid)
        run_dir = Path(app.controller.handle.run_dir)
        await pilot.press("q")
        await pilot.pause()
        assert app.screen.query_one("#quit-detach").has_focus
        await pilot.press("enter")
        await pilot.pause()
    assert not app.is_running
    assert alive(pid)  # the app is gone; its run is not
    before = steps_logged(run_dir)
    deadline = time.monotonic() + 10
    while steps_logged(run_dir) <= before:
        assert time.monotonic() < deadline, "the detached run stopped training"
        await asyncio.sleep(0.1)
    with open(run_dir / "run.toml", "rb") as fh:
        assert tomllib.load(fh)["run"]["status"] == "running"


SHORT_KINK = QUICK_KINK.replace('name = "quick-kink"', 'name = "kink"').replace(
    "epochs = 20000", "epochs = 150")


def test_closing_the_terminal_leaves_the_run_training(tmp_path, reap):
    """The app in a real pty (script); SIGHUP to the app, as when its terminal closes: the run
    it started finishes anyway."""
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "kink.toml").write_text(SHORT_KINK)  # shadows the built-in default preset
    runs = tmp_path / "runs"
    exe = Path(sys.executable).parent / "torchdeck"
    cmd = f"{exe} --runs-dir {runs} --presets {presets}"
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30",
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    # SIGHUP as a terminal leaves it, even where the tests run under nohup (ignored
    # signals are inherited: the app would then ignore its hangup, as nohup asks)
    term = subprocess.Popen(["script", "-qfc", cmd, "/dev/null"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        app_pid = None
        deadline = time.monotonic() + 40
        while not list(runs.glob("*/run.toml")):
            assert time.monotonic() < deadline, "the app did not start the run"
            if app_pid is None:
                app_pid = _find_app(str(runs))
            elif term.stdin:
                term.stdin.write(b"s")  # start (repeated until the app is ready for it)
                term.stdin.flush()
            time.sleep(0.5)
        run_dir = next(runs.glob("*/run.toml")).parent
        assert app_pid is not None
        os.kill(app_pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while alive(app_pid):
            assert time.monotonic() < deadline, "the app ignored SIGHUP"
            time.sleep(0.1)
        deadline = time.monotonic() + 40
        while True:
            with open(run_dir / "run.toml", "rb") as fh:
                status = tomllib.load(fh)["run"]["status"]
            if status != "running":
                break
            assert time.monotonic() < deadline, "the run did not finish"
            time.sleep(0.2)
        assert status == "finished"
        assert steps_logged(run_dir) == 1500
    finally:
        os.killpg(term.pid, signal.SIGKILL)
        term.wait()
        kill_workers(runs)


def _find_app(runs: str) -> int | None:
    """The pid of the torchdeck app started with --runs-dir `runs` (not the `script` or shell
    around it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if runs.encode() in args and any(a.endswith(b"torchdeck") for a in args[:2]):
            return int(entry.name)
    return None
