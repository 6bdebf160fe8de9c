"""The user's keymap file: binding ids to keys, applied with App.set_keymap; a bad file is one
error message naming it, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from tui.actions import APP_ACTIONS, MAIN_ACTIONS
from tui.app import binding_ids, make_app
from tui.keymap import KeymapError, keymap_path, read_keymap
from tui_fakes import FakeEngine

SIZE = (120, 40)


@pytest.fixture
def config_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    folder = tmp_path / "config" / "torchdeck"
    folder.mkdir(parents=True)
    return folder


def _app(tmp_path):
    engine = FakeEngine()
    return make_app(runs_dir=tmp_path / "runs", engine=engine, clock=lambda: 100.0,
                    tick_s=60.0, background_delay_s=0.0), engine


async def _ready(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _errors(app) -> list[str]:
    return [n.message for n in app._notifications if n.severity == "error"]


def test_keymap_path_respects_xdg_config_home(config_dir):
    assert keymap_path() == config_dir / "keymap.toml"


def test_read_keymap(tmp_path):
    known = {"start", "stop"}
    assert read_keymap(tmp_path / "none.toml", known) == {}
    path = tmp_path / "keymap.toml"
    path.write_text('start = "ctrl+s"\nstop = ["x", "ctrl+x"]\n')
    assert read_keymap(path, known) == {"start": "ctrl+s", "stop": "x,ctrl+x"}
    path.write_text('strat = "ctrl+s"\nstop = 3\n')
    with pytest.raises(KeymapError) as err:
        read_keymap(path, known)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and "'strat'" in text and "stop: expected a key" in text
    path.write_text("start = \n")
    with pytest.raises(KeymapError, match="not valid TOML"):
        read_keymap(path, known)


def test_bindings_come_from_the_one_table():
    from tui.app import TorchdeckApp
    from tui.screens.main import MainScreen

    for cls, table in ((MainScreen, MAIN_ACTIONS), (TorchdeckApp, APP_ACTIONS)):
        assert [(b.key, b.action, b.description, b.id, b.show) for b in cls.BINDINGS] == \
            [(a.key, a.action, a.label, a.id, a.show) for a in table]


def test_every_id_in_the_table_is_known():
    ids = binding_ids()
    assert {a.id for a in (*MAIN_ACTIONS, *APP_ACTIONS)} <= ids
    assert {"runs-open", "param-up", "dialog-cancel"} <= ids


async def test_keymap_file_rebinds_start(tmp_path, config_dir):
    (config_dir / "keymap.toml").write_text('start = "ctrl+s"\nstop = ["x", "ctrl+x"]\n')
    app, engine = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        assert _errors(app) == []
        await pilot.press("s")  # no longer start
        await _ready(pilot)
        assert engine.started == []
        keys = {b.binding.id: key for key, b in app.screen.active_bindings.items()}
        assert keys["start"] == "ctrl+s"
        await pilot.press("ctrl+s")
        await _ready(pilot)
        assert len(engine.started) == 1
        app.controller.tick()
        await pilot.press("ctrl+x")  # the second key of two
        app.controller.tick()
        await pilot.pause()
        assert app.controller.run_state.state == "stopped"


@pytest.mark.parametrize("text, what", [
    ("start = ", "not valid TOML"),
    ('strat = "ctrl+s"', "unknown binding id 'strat'"),
    ("start = 5", "start: expected a key"),
])
async def test_a_bad_keymap_file_is_one_error_naming_it(tmp_path, config_dir, text, what):
    path = config_dir / "keymap.toml"
    path.write_text(text + "\n")
    app, engine = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        errors = _errors(app)
        assert len(errors) == 1
        assert str(path) in errors[0] and what in errors[0] and "not applied" in errors[0]
        assert str(path) in str(app.query_one("#status", Static).render())
        await pilot.press("s")  # the default keys still work
        await _ready(pilot)
        assert len(engine.started) == 1
