"""Pictures of the main screen: idle, and mid-run from a fixed fake event stream."""

from __future__ import annotations

import pytest

from tui.app import make_app
from tui_fakes import FakeEngine


@pytest.fixture(autouse=True)
def _user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _app(tmp_path):
    # a fixed clock and no timer ticks: nothing in the picture depends on time
    return make_app(runs_dir=tmp_path / "runs", engine=FakeEngine(), clock=lambda: 100.0,
                    tick_s=3600.0, background_delay_s=0.0)


async def _settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_idle_screen(snap_compare, tmp_path):
    assert snap_compare(_app(tmp_path), terminal_size=(120, 40), run_before=_settle)


async def _mid_run(pilot) -> None:
    await _settle(pilot)
    await pilot.press("s")
    await pilot.app.workers.wait_for_complete()
    pilot.app.controller.tick()
    await pilot.pause()


def test_mid_run_screen(snap_compare, tmp_path):
    assert snap_compare(_app(tmp_path), terminal_size=(120, 40), run_before=_mid_run)


def test_mid_run_screen_narrow(snap_compare, tmp_path):
    assert snap_compare(_app(tmp_path), terminal_size=(80, 24), run_before=_mid_run)
