"""Pilot tests of the app against a fake engine: form, presets, controls, errors, quitting."""

from __future__ import annotations

import pytest
from textual.widgets import Button, Input, OptionList, Select, Static

from engine import events as ev
from engine.errors import DeviceError
from engine.jobs import ResumeJob
from tui.app import make_app
from tui.modals import RecoveryDialog
from tui.panes.inspector import Inspector, ParamTable
from tui.panes.loss_plot import LossPlot
from tui.panes.params_form import ParamsForm
from tui.panes.presets import PresetsPane
from tui.run_state import DeadTracker
from tui.screens.runs import RunsScreen
from tui_fakes import FakeEngine, _stat, fake_events

SIZE = (120, 40)


@pytest.fixture(autouse=True)
def _user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _app(tmp_path, **kwargs):
    engine = kwargs.pop("engine", None) or FakeEngine()
    return make_app(runs_dir=tmp_path / "runs", engine=engine, clock=lambda: 100.0,
                    tick_s=kwargs.pop("tick_s", 60.0), background_delay_s=0.0,
                    **kwargs), engine


async def _ready(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def _start(pilot) -> None:
    await pilot.press("s")
    await pilot.app.workers.wait_for_complete()
    pilot.app.controller.tick()
    await pilot.pause()


def _errors(app) -> str:
    return str(app.query_one("#form-errors", Static).render())


async def test_presets_listed_with_broken_one_marked(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        pane = app.query_one(PresetsPane)
        assert [p.name for p in pane.presets] == ["line", "digits", "broken"]
        labels = [str(app.query_one(OptionList).get_option_at_index(i).prompt) for i in range(3)]
        assert "broken" in labels[2] and "✗" in labels[2]
        pane.select("broken")
        await pilot.pause()
        detail = str(app.query_one("#preset-detail", Static).render())
        assert "expected a number > 0" in detail
        assert app.query_one("#start-button", Button).disabled
        assert app.main_screen.check_action("start", ()) is None  # shown, but disabled
        await pilot.press("s")  # disabled: no run, no crash, and the form says why
        await pilot.pause()
        assert app.controller.handle is None
        assert "Start disabled: the selected preset is broken" in _errors(app)
        pane.select("digits")  # the other presets still work
        await pilot.pause()
        assert not app.query_one("#start-button", Button).disabled
        assert str(app.query_one("#f-loss", Select).value) == "cross_entropy"


async def test_invalid_field_disables_start_and_says_why(tmp_path):
    app, engine = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        lr = app.query_one("#f-lr", Input)
        lr.value = "-1"
        await pilot.pause()
        assert app.query_one("#start-button", Button).disabled
        assert "lr: expected a number > 0" in _errors(app)
        assert lr.has_class("-bad")
        lr.value = "abc"
        await pilot.pause()
        assert "got 'abc'" in _errors(app)
        await pilot.press("s")
        await pilot.pause()
        assert engine.started == []
        lr.value = "0.05"
        app.query_one("#f-batch", Input).value = "0"
        await pilot.pause()
        assert "batch size: expected an integer >= 1" in _errors(app)
        app.query_one("#f-batch", Input).value = "2"
        await pilot.pause()
        assert not app.query_one("#start-button", Button).disabled
        assert "lr=0.05" in _errors(app) and "batch_size=2" in _errors(app)


async def test_optimiser_switch_and_cross_field_errors(tmp_path):
    app, engine = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        app.query_one("#f-optim", Select).value = "adam"  # the preset has momentum 0.9
        await pilot.pause()
        form = app.query_one(ParamsForm)
        assert form.config is not None, form.errors
        assert form.config["optim"]["name"] == "adam"
        assert form.config["optim"]["momentum"] == 0.0
        assert app.query_one("#f-momentum", Input).disabled
        app.query_one("#f-unit", Select).value = "steps"
        app.query_one("#f-length", Input).value = "123"
        await pilot.pause()
        assert form.config["train"]["steps"] == 123 and form.config["train"]["epochs"] == 0


async def test_device_list_comes_from_the_worker(tmp_path):
    app, _ = _app(tmp_path, engine=FakeEngine(devices=["cpu", "cuda:0", "cuda:1"]))
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        select = app.query_one("#f-device", Select)
        values = [value for _, value in select._options]
        assert values == ["auto", "cpu", "cuda:0", "cuda:1"]
        select.value = "cuda:1"
        await pilot.pause()
        await _start(pilot)
        assert app.engine.started[-1]["train"]["device"] == "cuda:1"


async def test_fake_run_pause_resume_stop_and_lr(tmp_path):
    app, engine = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        app.query_one("#f-lr", Input).value = "0.02"
        await pilot.pause()
        await _start(pilot)
        assert engine.started[0]["optim"]["lr"] == 0.02
        assert app.controller.run_state.state == "running"
        assert app.controller.run_state.step == 400
        assert app.query_one(LossPlot).model.train.total == 400
        assert app.query_one(ParamTable).row_count == 3
        status = str(app.query_one("#status", Static).render())
        assert "step 400/500" in status and "ETA 0:01" in status and "ckpt 0:00 ago" in status
        handle = engine.handles[0]
        await pilot.press("p")
        app.controller.tick()
        await pilot.pause()
        assert app.controller.run_state.state == "paused"
        await pilot.press("r")
        app.controller.tick()
        await pilot.pause()
        assert app.controller.run_state.state == "running"
        await pilot.press("l")
        await pilot.pause()
        app.screen.query_one("#lr-input", Input).value = "nope"
        await pilot.press("enter")
        await pilot.pause()
        assert "expected a number" in str(app.screen.query_one("#lr-error", Static).render())
        app.screen.query_one("#lr-input", Input).value = "0.005"
        await pilot.press("enter")
        app.controller.tick()
        await pilot.pause()
        assert ("set_lr", 0.005) in handle.calls
        assert app.controller.run_state.lr == 0.005
        await pilot.press("x")
        app.controller.tick()
        await pilot.pause()
        assert app.controller.run_state.state == "stopped"
        assert [c for c, _ in handle.calls] == ["pause", "resume", "set_lr", "stop"]
        assert app.main_screen.check_action("start", ())  # a new run may start


async def test_inspector_marks_dead_units_and_shows_values(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _start(pilot)
        table = app.query_one(ParamTable)
        assert table.dead == [False, False, True]
        lines = table.render().split("\n")
        assert "1.weight" in lines[3].plain and "red" in str(lines[3].spans[0].style)
        assert not any("red" in str(span.style) for span in lines[1].spans)
        table.focus()
        await pilot.press("down")
        await pilot.pause()
        detail = str(app.query_one("#param-info", Static).render())
        assert "0.bias" in detail and "values: 0.8" in detail
        await pilot.click(ParamTable, offset=(3, 3))
        await pilot.pause()
        assert table.cursor == 2
        detail = str(app.query_one("#param-info", Static).render())
        assert "dead" in detail and "values:" not in detail
        assert app.query_one(Inspector).step == 400


async def test_plot_toggles(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _start(pilot)
        plot = app.query_one(LossPlot)
        before = plot.model.version
        await pilot.press("g", "v", "m")
        await pilot.pause()
        assert plot.model.log_y and plot.model.recent_only and plot.model.smoothing == 0.9
        assert plot.model.version > before
        assert "log" in plot.border_title and "last 2000" in plot.border_title


async def test_start_failure_is_a_message_not_a_traceback(tmp_path):
    engine = FakeEngine(fail_start=DeviceError("--device cuda:3: there is no cuda:3 here"))
    app, _ = _app(tmp_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _start(pilot)
        assert app.controller.run_state.state == "failed"
        assert "there is no cuda:3 here" in app.main_screen.message
        assert "there is no cuda:3" in str(app.query_one("#status", Static).render())
        assert app.is_running  # still alive and usable
        assert app.main_screen.check_action("start", ())


async def test_quit_with_a_run_asks_then_stops_and_quits(tmp_path):
    app, engine = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _start(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert app.screen.query_one("#quit-detach", Button).has_focus  # the default
        await pilot.click("#quit-cancel")
        await pilot.pause()
        assert app.is_running and engine.handles[0].calls == []
        await pilot.press("q")
        await pilot.pause()
        await pilot.click("#quit-stop")
        await pilot.pause()
        assert ("stop", None) in engine.handles[0].calls
        app.controller.tick()
        await pilot.pause()
    assert app.return_code == 0


async def test_quit_with_a_run_detaches_by_default(tmp_path):
    app, engine = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _start(pilot)
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("enter")  # the focused button: Detach
        await pilot.pause()
    assert not app.is_running and app.return_code == 0
    assert engine.handles[0].calls == []  # nothing was sent to the run: it goes on


async def test_save_as_preset_writes_user_file(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        app.query_one("#f-lr", Input).value = "0.5"
        await pilot.pause()
        await pilot.press("w")
        await pilot.pause()
        app.screen.query_one("#name-input", Input).value = "my-line"
        await pilot.press("enter")
        await pilot.pause()
    saved = tmp_path / "config" / "torchdeck" / "presets" / "my-line.toml"
    assert saved.is_file()
    assert "lr = 0.5" in saved.read_text()


async def test_command_palette_lists_run_controls(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Start run" in titles and "Pause run" not in titles
        await _start(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Pause run", "Stop run", "Change learning rate"} <= set(titles)
        ids = {b.id for b in (*app.BINDINGS, *app.screen.BINDINGS)}
        assert {"start", "pause", "resume", "stop", "set-lr", "runs", "quit"} <= ids


def _stats(step, grad):
    return ev.ParamStats(step=step, params=(_stat("0.weight", (1, 1), 1.0, grad),))


def test_dead_only_when_the_zero_gradient_persists():
    tracker = DeadTracker(needed=3)
    tracker.observe(_stats(1, 0.0))  # one batch that happened to give no gradient
    assert not tracker.is_dead("0.weight")
    tracker.observe(_stats(2, 0.3))
    tracker.observe(_stats(3, 0.0))
    tracker.observe(_stats(4, 0.0))
    assert not tracker.is_dead("0.weight")
    tracker.observe(_stats(5, 0.0))
    assert tracker.is_dead("0.weight")  # three in a row
    tracker.observe(_stats(6, 0.1))
    assert not tracker.is_dead("0.weight")
    short = DeadTracker(needed=3)  # a short run with one snapshot, zero all along (dead ReLU)
    short.observe(_stats(1, 0.0))
    assert not short.is_dead("0.weight")
    short.ended = True
    assert short.is_dead("0.weight")


async def test_one_zero_gradient_snapshot_is_not_red(tmp_path):
    def events(run_dir, config):
        out = fake_events(run_dir, config)[:-4]  # without the fake's params and fit
        out.append(_stats(390, 0.0))
        return out

    app, _ = _app(tmp_path, engine=FakeEngine(events=events))
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _start(pilot)
        table = app.query_one(ParamTable)
        assert table.dead == [False]
        detail = str(app.query_one("#param-info", Static).render())
        assert "not dead unless it stays" in detail


def _diverged_events(run_dir, config):
    out = fake_events(run_dir, config, steps=100)
    reason = "diverged at step 101: the loss became nan; last.pt holds the last finite weights"
    out.append(ev.Finished(status="diverged", step=101,
                           summary={"reason": reason, "diverged_step": 101}))
    return out


async def test_diverged_run_offers_resume_with_a_lower_lr(tmp_path):
    app, engine = _app(tmp_path, engine=FakeEngine(events=_diverged_events))
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _start(pilot)
        await _ready(pilot)  # the options come from a thread
        assert app.controller.run_state.state == "diverged"
        dialog = app.screen
        assert isinstance(dialog, RecoveryDialog)
        assert "the loss became nan" in str(dialog.query_one("#recovery-note", Static).render())
        assert dialog.query_one("#recovery-lr", Input).value == "0.001"  # 0.01 / 10
        assert "the loss became nan" in str(app.query_one("#status", Static).render())
        first = dialog.query_one("#recovery-0", Button)
        assert first.has_focus and "back to step 50 of 101" in str(first.label)
        await pilot.press("enter")  # the focused button: resume from best.pt at this lr
        await app.workers.wait_for_complete()
        await pilot.pause()
        job = engine.jobs[-1]
        assert isinstance(job, ResumeJob) and job.source == "best"
        assert job.overrides == ("optim.lr=0.001",)
        assert job.ref.endswith("20250101-000000-line")


async def test_a_resumed_run_replaces_the_steps_after_its_checkpoint(tmp_path):
    def events(run_dir, config):
        first = fake_events(run_dir, config, steps=100)
        again = fake_events(run_dir, config, steps=100)[0]
        resumed = ev.RunStarted(**{**again.__dict__, "start_step": 50, "start_epoch": 5})
        tail = ev.StepMetrics(first_step=51, epoch=6, losses=(0.5,) * 20, lr=0.001,
                              elapsed_s=1.0, samples_per_s=1.0, steps_per_s=1.0)
        return [*first, ev.Finished(status="diverged", step=100, summary={}), resumed, tail]

    app, _ = _app(tmp_path, engine=FakeEngine(events=events))
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _start(pilot)
        assert app.controller.run_state.state == "running"  # the resumed run goes on: no offer
        assert not isinstance(app.screen, RecoveryDialog)
        model = app.query_one(LossPlot).model
        assert model.train.total == 70 and model.recent.points()[0][-1] == 70


async def test_attach_shows_the_history_of_a_finished_run(tmp_path):
    app, engine = _app(tmp_path, attach=tmp_path / "runs" / "some-run")
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        app.controller.tick()
        await pilot.pause()
        assert app.controller.run_state.state == "finished"
        assert app.query_one(LossPlot).model.train.total == 400
        assert app.query_one(ParamTable).row_count == 3
        assert not app.main_screen.check_action("pause", ())


async def test_runs_screen_opens_from_key_and_palette(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        assert "Runs" in [c.title for c in app.get_system_commands(app.screen)]
        await pilot.press("R")
        await _ready(pilot)
        assert isinstance(app.screen, RunsScreen)
        active = {b.binding.action for b in app.screen.active_bindings.values()}
        assert "start" not in active  # main-screen keys are off here
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, RunsScreen)
