"""Pictures of the app at 80x24, 120x40 and 200x60: idle, mid-run, finished, the runs screen
and the help screen, from a fixed fake event stream, a fixed clock and fixed machine figures
(tests/tui_fakes.py): nothing in them depends on time or on the machine."""

from __future__ import annotations

import pytest

from tui.app import make_app
from tui.engine_port import RunRow
from tui.screens.runs import RunsScreen
from tui_fakes import FakeEngine

SIZES = {"80x24": (80, 24), "120x40": (120, 40), "200x60": (200, 60)}


@pytest.fixture(autouse=True)
def _user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _engine() -> FakeEngine:
    engine = FakeEngine()
    config = {"optim": {"name": "sgd", "lr": 0.01}, "train": {"epochs": 20, "seed": 1}}
    engine.run_rows = [
        RunRow(id="20250102-000000-kink", path="/runs/20250102-000000-kink",
               status="running (alive, pid 12)", preset="kink", started="2025-01-02 00:00",
               duration_s=12.0, steps=100, final_loss=0.25, best="val 0.2", lr=0.05,
               config=config),
        RunRow(id="20250101-000000-digits", path="/runs/20250101-000000-digits",
               status="finished", preset="digits", started="2025-01-01 00:00",
               duration_s=30.0, steps=200, final_loss=0.125, best="acc 0.9667", lr=0.01,
               config=config),
        RunRow(id="20000101-000000-no-toml", path="/runs/20000101-000000-no-toml",
               status="damaged", problem="no run.toml"),
    ]
    return engine


def _app(tmp_path):
    # a fixed clock and no timer ticks: nothing in the picture depends on time
    app = make_app(runs_dir="runs", engine=_engine(), clock=lambda: 100.0, tick_s=3600.0,
                   background_delay_s=0.0)
    app.controller.system_poll_s = 3600.0  # sampled once, at mount (fixed fake figures)
    return app


async def _settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def _mid_run(pilot) -> None:
    await _settle(pilot)
    await pilot.press("s")
    await pilot.app.workers.wait_for_complete()
    pilot.app.controller.tick()
    await _settle(pilot)


async def _finished(pilot) -> None:
    await _mid_run(pilot)
    await pilot.press("x")
    pilot.app.controller.tick()
    await _settle(pilot)


async def _runs(pilot) -> None:
    await _settle(pilot)
    await pilot.press("R")
    def ready() -> bool:
        screen = pilot.app.screen
        return isinstance(screen, RunsScreen) and screen.loaded and screen.current is not None \
            and screen.current.path in screen.curves

    while not ready():
        await pilot.pause(0.02)
    await _settle(pilot)


async def _help(pilot) -> None:
    await _settle(pilot)
    await pilot.press("question_mark")
    await _settle(pilot)


SCENES = {"idle": _settle, "mid_run": _mid_run, "finished": _finished, "runs": _runs,
          "help": _help}


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("scene", list(SCENES))
def test_screen(snap_compare, tmp_path, scene, size):
    assert snap_compare(_app(tmp_path), terminal_size=SIZES[size], run_before=SCENES[scene])
