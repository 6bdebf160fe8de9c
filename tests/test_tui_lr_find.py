"""The LR finder in the app (`L`): the range test on the form's config in a child process, its
curve on a log-lr plot with the suggestion marked, and `u` putting the suggestion into the
form. Nothing is written; the user's next run starts fresh."""

from __future__ import annotations

from textual.widgets import Input, Static
from tui_tool_fakes import ToolsEngine

from tui.app import make_app
from tui.panes.params_form import ParamsForm
from tui.screens.lr_find import LrCurve, LrFindScreen
from tui_fakes import wait_for

SIZE = (120, 40)


async def test_lr_find_draws_the_curve_and_u_puts_the_suggestion_into_the_form(tmp_path):
    runs = tmp_path / "runs"
    app = make_app(runs_dir=runs, background_delay_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        form = app.main_screen.query_one(ParamsForm)
        await wait_for(pilot, lambda: form.config is not None, what="the form")
        assert form.preset_name == "kink"
        await pilot.press("escape", "L")
        await wait_for(pilot, lambda: isinstance(app.screen, LrFindScreen), what="the screen")
        finder = app.screen
        assert not finder.check_action("use_lr", ())  # nothing to use yet
        await wait_for(pilot, lambda: finder.result is not None or finder.error, timeout=120,
                       what="the range test")
        assert not finder.error
        result = finder.result
        assert result.suggestion is not None and 1e-6 < result.suggestion < 1.0
        picture = finder.query_one(LrCurve).render().plain
        assert "1e-7" in picture and "1e-3" in picture  # lr on a log axis, decades labelled
        said = str(finder.query_one("#lrf-result", Static).render())
        assert f"suggested lr {result.suggestion:.3g}" in said and "rule: steepest" in said
        await pilot.press("u")
        await wait_for(pilot, lambda: app.screen is app.main_screen, what="the main screen")
        await wait_for(pilot, lambda: form.config is not None
                       and form.config["optim"]["lr"] == float(f"{result.suggestion:.3g}"),
                       what="the lr in the form")
        assert form.query_one("#f-lr", Input).value == f"{float(f'{result.suggestion:.3g}'):g}"
        assert "LR finder" in app.main_screen.message
    assert not runs.exists()  # nothing written: no run folder, no checkpoint


async def test_esc_leaves_the_form_as_it_was_and_progress_is_drawn():
    engine = ToolsEngine()
    app = make_app(runs_dir="runs", engine=engine, tick_s=3600.0, background_delay_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        form = app.main_screen.query_one(ParamsForm)
        await wait_for(pilot, lambda: form.config is not None, what="the form")
        before = form.query_one("#f-lr", Input).value
        await pilot.press("escape", "L")
        await wait_for(pilot, lambda: isinstance(app.screen, LrFindScreen)
                       and app.screen.result is not None, what="the fake result")
        assert engine.lr_configs[0]["optim"]["lr"] == form.config["optim"]["lr"]
        assert len(app.screen.lrs) == 3  # the progress messages, drawn as they came
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main_screen, what="the main screen")
        assert form.query_one("#f-lr", Input).value == before


async def test_leaving_the_finder_early_ends_its_child_process(tmp_path):
    import psutil

    def children() -> list:
        return [p for p in psutil.Process().children(recursive=True)
                if "engine.lr_find" in " ".join(p.cmdline())]

    app = make_app(runs_dir=tmp_path / "runs", background_delay_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        form = app.main_screen.query_one(ParamsForm)
        await wait_for(pilot, lambda: form.config is not None, what="the form")
        await pilot.press("escape", "L")
        await wait_for(pilot, lambda: bool(children()), what="the finder's child process")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not children(), timeout=10, what="the child to end")
        assert app.screen is app.main_screen
        assert form.query_one("#f-lr", Input).value == "0.001"  # untouched
