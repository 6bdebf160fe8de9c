"""Issue 9, the app half: axes, headline numbers, sizes, keys, runs screen, form, plot views,
inspector history and the machine in view; pilot tests against the fake engine."""

from __future__ import annotations

import dataclasses
import math

import pytest
from textual.widgets import DataTable, Footer, Input, OptionList, Sparkline, Static
from textual.widgets._toast import ToastRack

from engine import events as ev
from engine.presets import PresetInfo
from tui.actions import MAIN_ACTIONS
from tui.app import make_app
from tui.engine_port import RunRow
from tui.help import HelpScreen
from tui.modals import ConfirmDialog, LrDialog
from tui.panes.inspector import Inspector, ParamTable
from tui.panes.loss_plot import LossModel, LossPlot
from tui.panes.params_form import ParamsForm
from tui.plotting import (
    Trace,
    count_label,
    decade_label,
    log_ticks,
    nice_ticks,
    render_plot,
    value_label,
)
from tui.run_state import RunState
from tui.screens.runs import RunsScreen
from tui.status import status_text
from tui_fakes import FAKE_PRESETS, FakeEngine, fake_events, fake_presets, wait_for

SMALL, MEDIUM, LARGE = (80, 24), (120, 40), (200, 60)


@pytest.fixture(autouse=True)
def _user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _app(tmp_path, engine=None, **kwargs):
    engine = engine or FakeEngine()
    return make_app(runs_dir=tmp_path / "runs", engine=engine, clock=lambda: 100.0,
                    tick_s=kwargs.pop("tick_s", 60.0), background_delay_s=0.0,
                    **kwargs), engine


async def _ready(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def _start(pilot, key: str = "s") -> None:
    await pilot.press(key)
    await pilot.app.workers.wait_for_complete()
    pilot.app.controller.tick()
    await pilot.pause()


def _status(app) -> str:
    return str(app.main_screen.status_line.render())


# --- axes ---------------------------------------------------------------------------------
def test_ticks_are_round_and_log_labels_are_decades():
    assert nice_ticks(1, 23_000, 5, integer=True) == [5000, 10000, 15000, 20000]
    assert [count_label(v) for v in (0, 500, 1000, 2500, 20_000, 1_500_000)] == \
        ["0", "500", "1k", "2.5k", "20k", "1.5M"]
    assert nice_ticks(1, 13, 5, integer=True) == [5, 10]  # whole epochs
    assert [decade_label(v) for v in (1e-5, 1e-1, 1.0, 10.0, 1e3)] == \
        ["1e-5", "1e-1", "1", "10", "1e3"]
    _, labels = log_ticks(-5.2, 0.4, 6)
    assert labels == ["1e-5", "1e-4", "1e-3", "1e-2", "1e-1", "1"]
    assert value_label(2.5, 0.5) == "2.5" and value_label(0.25, 0.25) == "0.25"
    assert value_label(3e-5, 1e-5) == "3e-5"
    xs = list(range(1, 23_000, 7))
    ys = [4 * math.exp(-x / 3000) + 1e-5 for x in xs]
    linear = render_plot([Trace(xs, ys)], 70, 14).plain
    assert "5k" in linear and "20k" in linear and "e+" not in linear
    log = render_plot([Trace(xs, ys)], 70, 14, log_y=True).plain
    assert "1e-1" in log and "0.0000" not in log
    fit = render_plot([Trace([x / 3 for x in range(-60, 36)], [x for x in range(-60, 36)])],
                      50, 10, x_kind="value").plain
    assert "-10" in fit and "-20.0" not in fit and "11.7" not in fit


async def test_lr_changes_are_marked_on_the_plot(tmp_path):
    app, engine = _app(tmp_path)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        await _start(pilot)
        app.controller.set_lr(0.05)
        app.controller.tick()
        await pilot.pause()
        plot = app.query_one(LossPlot)
        assert plot.model.lr_marks == [engine.handles[0].step]
        assert "lr changed" in str(plot.border_subtitle)


def test_plot_views_cycle_and_draw_their_series():
    model = LossModel()
    model.add_losses(1, tuple(1.0 / s for s in range(1, 101)))
    model.add_lr(100, 0.01)
    model.add_accuracy(50, 0.8)
    model.add_accuracy(100, 0.9)
    model.add_grad_norm(50, 2.0)
    model.add_grad_norm(100, 1.0)
    model.mark_lr_change(60)
    views = [model.view]
    for _ in range(4):
        views.append(model.cycle_view())
        assert "no " not in model.render(60, 12).plain[:3], model.view
    assert views == ["loss", "accuracy", "lr", "grad norm", "loss"]


# --- numbers --------------------------------------------------------------------------------
async def test_accuracy_and_val_loss_are_numbers_on_the_main_screen(tmp_path):
    app, engine = _app(tmp_path)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        app.main_screen.presets_pane.select("digits")
        await pilot.pause()
        await _start(pilot)
        status = _status(app)
        assert "acc 90.00%" in status and "val " in status, status
        run = app.controller.run_state
        assert run.best_val_loss is not None and run.val_loss is not None
        notes = []
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        await pilot.press("x")
        app.controller.tick()
        await pilot.pause()
        assert app.controller.run_state.state == "stopped"
        assert "acc 90.00%" in _status(app)
        assert any("acc 90.00%" in n and "val " in n for n in notes), notes


def test_status_line_is_one_line_that_fits():
    run = RunState(state="running", preset="digits-cnn", total_steps=40_000, total_epochs=200,
                   step=12_345, epoch=61, lr=0.01, steps_per_s=812.0, samples_per_s=51_968.0,
                   device="cuda:0", device_memory="31.0/80 GiB", val_loss=0.0421,
                   best_val_loss=0.0398, accuracy=0.9871, best_accuracy=0.9880,
                   last_checkpoint_t=90.0)
    for width in (80, 120, 200):
        text = status_text(run, 100.0, "", width)
        assert "\n" not in text.plain and text.cell_len <= width, (width, text.plain)
        assert "step 12,345/40,000" in text.plain and "acc 98.71%" in text.plain
    assert "lr 0.01" in status_text(run, 100.0, "", 200).plain
    assert "ckpt" in status_text(run, 100.0, "", 200).plain


# --- sizes ----------------------------------------------------------------------------------
class ManyPresets(FakeEngine):
    def presets(self, extra_dirs):
        base = fake_presets()[0]
        more = [dataclasses.replace(base, name=f"p{i:02d}") for i in range(12)]
        return [*fake_presets(), *more]


async def test_80x24_presets_list_scrolls_and_inspector_shows_the_dead_column(tmp_path):
    app, _ = _app(tmp_path, engine=ManyPresets())
    async with app.run_test(size=SMALL) as pilot:
        await _ready(pilot)
        olist = app.query_one(OptionList)
        assert olist.content_region.height >= 3, olist.content_region
        app.main_screen.presets_pane.select("p11")
        await pilot.pause()
        await pilot.pause()
        assert olist.scroll_offset.y <= olist.highlighted < \
            olist.scroll_offset.y + olist.content_region.height
        app.main_screen.presets_pane.select("line")
        await pilot.pause()
        await _start(pilot)
        table = app.query_one(ParamTable)
        header = table.render().plain.splitlines()[0]
        for column in ("name", "grad‖", "upd/w", "dead"):
            assert column in header, header
        status = app.main_screen.status_line
        assert status.size.height == 1 and status._shown.cell_len <= SMALL[0]


async def test_120x40_inspector_shows_every_column_and_scrolls_sideways(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        await _start(pilot)
        table = app.query_one(ParamTable)
        header = table.render().plain.splitlines()[0]
        assert "dead" in header and "shape" in header, header
        assert _status(app).endswith("ago") or "lr 0.01" in _status(app)
    app, _ = _app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:  # narrow: the rest by scrolling sideways
        await _ready(pilot)
        await _start(pilot)
        table = app.query_one(ParamTable)
        table.focus()
        for _ in range(8):
            await pilot.press("right")
        header = table.render().plain.splitlines()[0]
        assert "shape" in header and "◀" in header, header


async def test_200x60_panes_use_the_space(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=LARGE) as pilot:
        await _ready(pilot)
        await _start(pilot)
        screen = app.main_screen
        assert screen.query_one("#left").size.width >= 48
        assert screen.loss_plot.size.width >= 100
        inspector = app.query_one(Inspector)
        detail = inspector.query_one("#param-detail-box")
        assert detail.region.y == inspector.query_one(ParamTable).region.y  # beside the table


async def test_toasts_sit_above_the_status_line(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=SMALL, notifications=True) as pilot:
        await _ready(pilot)
        app.notify("a long notification " * 4)
        await pilot.pause()
        await pilot.pause()
        rack = app.screen.get_child_by_type(ToastRack)
        status = app.main_screen.status_line
        assert rack.region.bottom <= status.region.y, (rack.region, status.region)


# --- keys -----------------------------------------------------------------------------------
async def test_escape_leaves_a_field_and_enter_or_ctrl_s_starts(tmp_path):
    app, engine = _app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await _ready(pilot)
        lr = app.query_one("#f-lr", Input)
        lr.focus()
        await pilot.pause()
        keys = {fk.action for fk in app.main_screen.query_one(Footer).query("FooterKey")}
        assert {"leave_field", "start"} <= keys, keys  # the footer stays useful in a field
        lr.value = "0.02"
        await pilot.press("escape")
        assert not lr.has_focus
        await _start(pilot)  # s is a command again, not a letter in the field
        assert lr.value == "0.02" and engine.started[-1]["optim"]["lr"] == 0.02
    app, engine = _app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await _ready(pilot)
        app.query_one("#f-lr", Input).focus()
        await _start(pilot, "enter")
        assert len(engine.started) == 1
    app, engine = _app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await _ready(pilot)
        app.query_one("#f-batch", Input).focus()
        await _start(pilot, "ctrl+s")
        assert len(engine.started) == 1


async def test_first_key_after_l_lands_in_the_lr_field(tmp_path):
    app, engine = _app(tmp_path)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        await _start(pilot)
        await pilot.press("l", "5")
        assert isinstance(app.screen, LrDialog)
        assert "5" in app.screen.query_one("#lr-input", Input).value
        await pilot.press("enter")
        await pilot.pause()
        assert engine.handles[0].calls[-1][0] == "set_lr"


async def test_help_lists_every_binding_and_escape_closes_it(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=LARGE) as pilot:
        await _ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.pause()
        text = "\n".join(s.text for s in app.screen._compositor.render_strips())
        for action in MAIN_ACTIONS:
            assert (action.title or action.label) in text, action
        assert "Select" in text and "Open the highlighted run" in text  # the runs screen's
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_plots_focus_and_maximise_and_the_palette_has_no_keys_panel(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        app.query_one("#f-device").focus()
        await pilot.press("escape")
        await pilot.press("z")
        screen = app.main_screen
        assert isinstance(screen.maximized, LossPlot) and screen.maximized.has_focus
        await pilot.press("escape")
        assert screen.maximized is None
        app.query_one(ParamTable).focus()
        await pilot.press("z")
        assert isinstance(screen.maximized, Inspector)
        await pilot.press("z")
        assert screen.maximized is None
        titles = [c.title for c in app.get_system_commands(screen)]
        assert "Keys" not in titles and "Maximize" not in titles
        assert "Maximise plot" in titles and "Help: keys" in titles


# --- runs screen ----------------------------------------------------------------------------
def _rows() -> list[RunRow]:
    config = {"optim": {"name": "sgd", "lr": 0.01}, "train": {"epochs": 20, "seed": 1}}
    other = {"optim": {"name": "sgd", "lr": 0.01}, "train": {"epochs": 20, "seed": 2}}
    return [
        RunRow(id="20250102-000000-kink", path="/runs/20250102-000000-kink",
               status="running (alive, pid 12)", preset="kink", started="2025-01-02 00:00",
               duration_s=12.0, steps=100, final_loss=0.25, best="val 0.2", lr=0.05,
               config=config),
        RunRow(id="20250101-000000-kink", path="/runs/20250101-000000-kink",
               status="finished", preset="kink", started="2025-01-01 00:00", duration_s=30.0,
               steps=200, final_loss=0.125, best="val 0.1", lr=0.01, config=other),
    ]


async def test_runs_table_never_collapses(tmp_path):
    engine = FakeEngine()
    engine.run_rows = _rows()
    app, _ = _app(tmp_path, engine=engine)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        for _ in range(8):
            await pilot.press("R")
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen)
                           and app.screen.loaded, what="the runs list")
            table = app.screen.query_one(DataTable)
            widths = {str(c.key.value): c.get_render_width(table) for c in table.ordered_columns}
            assert widths["id"] >= len("20250102-000000-kink"), widths
            lines = [s.text for s in app.screen._compositor.render_strips()]
            assert any("20250102-000000-kink" in line and "running" in line for line in lines)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, RunsScreen))


async def test_runs_screen_refreshes_alive_runs_plurals_and_live_lr_in_the_diff(tmp_path):
    engine = FakeEngine()
    engine.run_rows = _rows()[:1]
    app, _ = _app(tmp_path, engine=engine)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
        screen = app.screen
        assert "1 run" in str(screen.query_one("#runs-title", Static).render())
        assert "1 runs" not in str(screen.query_one("#runs-title", Static).render())
        # the run finishes while the screen is open
        engine.run_rows = [dataclasses.replace(_rows()[0], status="finished")]
        screen.refresh_alive()

        def status() -> str:
            table = screen.query_one(DataTable)
            return str(table.get_row_at(0)[2])

        await wait_for(pilot, lambda: status() == "finished", what="the finished status")
    engine = FakeEngine()
    engine.run_rows = _rows()
    app, _ = _app(tmp_path, engine=engine)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
        screen = app.screen
        screen.select(*(r.path for r in engine.run_rows))
        await pilot.pause()
        diff = str(screen.query_one("#runs-diff", Static).render())
        assert "optim.lr (now)" in diff and "train.seed" in diff, diff
        title = str(screen.query_one("#runs-diff-box").border_title)
        assert title == "Config diff: 2 keys differ"
        engine.run_rows[0].lr = 0.01  # no live change: only the seed differs
        screen.select()
        screen._draw_diff()
        assert str(screen.query_one("#runs-diff-box").border_title) == \
            "Config diff: 1 key differs"


# --- form and run ---------------------------------------------------------------------------
class LongRun(FakeEngine):
    """Attach gives a run of 40,000 epochs at lr 0.05; runs have trained for minutes."""

    def follow(self, run_dir):
        handle = super().follow(run_dir)
        config = dict(FAKE_PRESETS["line"], optim={"name": "sgd", "lr": 0.05, "momentum": 0.5},
                      train={**FAKE_PRESETS["line"]["train"], "epochs": 40_000})
        from engine.schema import validate

        config = validate(config)
        handle._buffer = [ev.RunStarted(**{**dataclasses.asdict(handle._buffer[0]),
                                           "config": config}), *handle._buffer[1:]]
        return handle

    def start(self, config, runs_dir):
        self.events = lambda run_dir, cfg: [
            dataclasses.replace(e, elapsed_s=300.0) if isinstance(e, ev.StepMetrics) else e
            for e in fake_events(run_dir, cfg)]
        return super().start(config, runs_dir)


async def test_attached_run_shows_its_own_config_in_the_form(tmp_path):
    app, _ = _app(tmp_path, engine=LongRun(), attach=str(tmp_path / "runs" / "r1"))
    async with app.run_test(size=MEDIUM) as pilot:
        await wait_for(pilot, lambda: app.controller.run_state.state == "finished")
        await pilot.pause()
        form = app.query_one(ParamsForm)
        assert app.query_one("#f-length", Input).value == "40000"
        assert app.query_one("#f-lr", Input).value == "0.05"
        assert "run 20250101-000000-line" in str(form.border_title)


class DigitsRun(FakeEngine):
    """Attach gives a run of the digits preset at lr 0.05 (the preset says 0.001)."""

    def follow(self, run_dir):
        handle = super().follow(run_dir)
        from engine.schema import validate

        config = validate(dict(FAKE_PRESETS["digits"], optim={"name": "adam", "lr": 0.05}))
        handle._buffer = [ev.RunStarted(**{**dataclasses.asdict(handle._buffer[0]),
                                           "config": config}), *handle._buffer[1:]]
        return handle


async def test_attached_run_points_the_presets_list_at_its_preset(tmp_path):
    app, _ = _app(tmp_path, engine=DigitsRun(), attach=str(tmp_path / "runs" / "r1"))
    async with app.run_test(size=MEDIUM) as pilot:
        await wait_for(pilot, lambda: app.controller.run_state.state == "finished")
        pane = app.query_one("PresetsPane")
        await wait_for(pilot, lambda: pane.current.name == "digits", what="digits highlighted")
        await pilot.pause()
        # only shown: the form keeps the run's own values
        assert app.query_one("#f-lr", Input).value == "0.05"
        assert "run " in str(app.query_one(ParamsForm).border_title)
        assert "Digits: a fake classifier" in str(app.query_one("#preset-detail").render())
        # picking another preset and back loads the presets' own values, as always
        assert pane.select("line")
        await wait_for(pilot, lambda: app.query_one(ParamsForm).preset_name == "line")
        assert pane.select("digits")
        await wait_for(pilot, lambda: app.query_one("#f-lr", Input).value == "0.001",
                       what="the digits preset's own lr")


class RestartedAtLowerLr(LongRun):
    """The attached run was restarted at lr 0.005: a recorded change at step 0."""

    def follow(self, run_dir):
        handle = super().follow(run_dir)
        change = ev.HparamChanged(step=0, key="optim.lr", old=0.05, new=0.005)
        handle._buffer = [handle._buffer[0], change, *handle._buffer[1:]]
        return handle


async def test_the_form_follows_the_attached_runs_lr_changes(tmp_path):
    app, _ = _app(tmp_path, engine=RestartedAtLowerLr(), attach=str(tmp_path / "runs" / "r1"))
    async with app.run_test(size=MEDIUM) as pilot:
        await wait_for(pilot, lambda: app.controller.run_state.state == "finished")
        await wait_for(pilot, lambda: app.query_one("#f-lr", Input).value == "0.005")
        assert "preset values" in str(app.query_one("#form-errors").render())


async def test_opening_another_run_while_one_is_live_asks_first(tmp_path):
    engine = FakeEngine()
    engine.run_rows = _rows()
    app, _ = _app(tmp_path, engine=engine)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        await _start(pilot)
        live = app.controller.handle
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("escape")  # no: still following the live run
        await pilot.pause()
        assert app.controller.handle is live and app.controller.live
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        app.screen.query_one("#confirm-yes").press()
        await wait_for(pilot, lambda: app.controller.handle is not live, what="the attach")
        assert live.closed


async def test_switching_presets_with_edits_asks_first(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        pane = app.main_screen.presets_pane
        pane.select("line")
        await pilot.pause()
        app.query_one("#f-lr", Input).value = "0.5"
        await pilot.pause()
        pane.select("digits")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("escape")  # keep editing: back on line, the edit kept
        await wait_for(pilot, lambda: pane.current.name == "line")
        assert app.query_one("#f-lr", Input).value == "0.5"
        pane.select("digits")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        app.screen.query_one("#confirm-yes").press()
        await wait_for(pilot, lambda: app.query_one(ParamsForm).preset_name == "digits")
        assert app.query_one("#f-lr", Input).value == "0.001"
        assert not app.query_one("#r-momentum").display  # adam: no momentum field


async def test_stopping_a_long_run_asks_to_confirm(tmp_path):
    app, engine = _app(tmp_path, engine=LongRun())
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        await _start(pilot)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("escape")
        assert not engine.handles[0].calls
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        app.screen.query_one("#confirm-yes").press()
        await wait_for(pilot, lambda: engine.handles[0].calls == [("stop", None)])


# --- inspector history and the machine in view ---------------------------------------------
async def test_inspector_sparklines_and_system_strip(tmp_path):
    app, engine = _app(tmp_path, engine=FakeEngine(devices=["cpu", "cuda:0"]))
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        assert "cpu 97%" in str(app.query_one("#system", Static).render())
        await _start(pilot)
        inspector = app.query_one(Inspector)
        assert len(inspector.history["0.weight"][0]) == 3
        assert list(inspector.query_one("#spark-grad", Sparkline).data) == [0.12] * 3
        app.controller.run_state.device = "cuda:0"
        app.controller.poll_system()
        await _ready(pilot)
        strip = str(app.query_one("#system", Static).render())
        assert "H100 87% 61°C 31/80 GiB" in strip and "cuda:0" in strip, strip
        assert engine.system_calls[-1] == (4242, "cuda:0")  # the worker's pid
        assert "31.0/80 GiB" in app.controller.run_state.device_memory


def test_fake_presets_cover_both_optimisers():
    assert {p.config["optim"]["name"] for p in fake_presets() if p.config} == {"sgd", "adam"}
    assert isinstance(fake_presets()[0], PresetInfo)


async def test_the_focused_pane_is_clearly_marked(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        presets, form = app.query_one("#presets"), app.query_one("#form")
        assert presets.styles.border_top[0] == "heavy"  # the preset list has focus
        assert form.styles.border_top[0] == "round"
        app.query_one("#f-lr", Input).focus()
        await pilot.pause()
        assert form.styles.border_top[0] == "heavy" and presets.styles.border_top[0] == "round"
        app.query_one(LossPlot).focus()
        await pilot.pause()
        assert app.query_one(LossPlot).styles.border_top[0] == "heavy"


# --- issue 9's nits: sparklines before data, the plot title's keys, help at 80x24 -----------
async def test_sparklines_wait_for_two_snapshots_and_the_plot_title_follows_the_keymap(
        tmp_path):
    config_dir = tmp_path / "config" / "torchdeck"
    config_dir.mkdir(parents=True)
    (config_dir / "keymap.toml").write_text('plot-view = "j"\ntoggle-log = ["o", "ctrl+o"]\n')

    def one_snapshot(run_dir, config):
        events = fake_events(run_dir, config)
        params = [e for e in events if isinstance(e, ev.ParamStats)]
        return [e for e in events if e not in params[:-1]]

    app, _ = _app(tmp_path, engine=FakeEngine(events=one_snapshot))
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        title = app.query_one(LossPlot).border_title
        assert "[j]Loss" in title and "[o]lin" in title and "[v]all" in title, title
        spark = app.query_one("#spark-grad", Sparkline)
        assert not spark.display and app.query_one("#spark-grad-empty").display
        await _start(pilot)
        assert not spark.display  # one snapshot: no flat line that means nothing
        await pilot.press("j")
        await pilot.pause()
        assert app.query_one(LossPlot).model.view == "accuracy"
        assert "[j]Accuracy" in app.query_one(LossPlot).border_title

    app, _ = _app(tmp_path / "again")
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        await _start(pilot)
        spark = app.query_one("#spark-grad", Sparkline)
        assert spark.display and list(spark.data) == [0.12] * 3
        assert not app.query_one("#spark-grad-empty").display


async def test_help_fits_80x24_without_scrolling(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await _ready(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        box = app.screen.query_one("#help-box")
        assert box.max_scroll_y == 0, box.max_scroll_y
        text = "\n".join(s.text for s in app.screen._compositor.render_strips())
        for action in MAIN_ACTIONS:
            assert (action.title or action.label) in text, action
        assert "Columns left / right" in text and "Open the highlighted run" in text


async def test_a_finished_runs_inspector_says_when_its_snapshot_was_taken(tmp_path):
    def events(run_dir, config):  # the last snapshot at step 400, the run ends at 403
        return [*fake_events(run_dir, config),
                ev.StepMetrics(first_step=401, epoch=41, losses=(0.1,) * 3, lr=0.01,
                               elapsed_s=4.03, samples_per_s=300.0, steps_per_s=100.0),
                ev.Finished(status="finished", step=403,
                            summary={"steps": 403, "epochs": 40, "final_loss": 0.1})]

    app, _ = _app(tmp_path, engine=FakeEngine(events=events))
    async with app.run_test(size=MEDIUM) as pilot:
        await _ready(pilot)
        await _start(pilot)
        await _ready(pilot)
        inspector = app.query_one(Inspector)
        assert inspector.border_title == "Parameters at step 400 (ended at 403)"
        assert app.controller.run_state.step == 403 and app.controller.run_state.epoch == 40
