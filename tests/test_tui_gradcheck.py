"""The gradient check in the app (`G`): engine.gradcheck on the form's model in a child
process, its table in a dialog, failing rows in red."""

from __future__ import annotations

from textual.widgets import Static
from tui_tool_fakes import ToolsEngine

from tui.app import make_app
from tui.panes.params_form import ParamsForm
from tui.screens.gradcheck import GradcheckScreen
from tui_fakes import table_rows, wait_for

SIZE = (120, 40)


async def test_gradcheck_of_kink_shows_a_passing_table(tmp_path):
    app = make_app(runs_dir=tmp_path / "runs", background_delay_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        form = app.main_screen.query_one(ParamsForm)
        await wait_for(pilot, lambda: form.config is not None, what="the form")
        await pilot.press("escape", "G")
        await wait_for(pilot, lambda: isinstance(app.screen, GradcheckScreen), what="dialog")
        check = app.screen
        await wait_for(pilot, lambda: check.report is not None or check.error, timeout=120,
                       what="the gradient check")
        assert not check.error and check.report.ok
        rows = table_rows(check)
        names = [str(r[0]) for r in rows]
        assert names == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
        assert all(str(r[3]) == "pass" for r in rows)
        assert all(float(str(r[1])) < 1e-6 for r in rows)  # max abs error
        assert "all 6 gradients match" in str(check.query_one("#gc-title", Static).render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main_screen, what="the main screen")
    assert not (tmp_path / "runs").exists()


async def test_failing_gradients_are_named_and_red():
    app = make_app(runs_dir="runs", engine=ToolsEngine(report_ok=False), tick_s=3600.0,
                   background_delay_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        form = app.main_screen.query_one(ParamsForm)
        await wait_for(pilot, lambda: form.config is not None, what="the form")
        await pilot.press("escape", "G")
        await wait_for(pilot, lambda: isinstance(app.screen, GradcheckScreen)
                       and app.screen.report is not None, what="the fake report")
        rows = table_rows(app.screen)
        failing = [r for r in rows if str(r[3]).startswith("FAIL")]
        assert [str(r[0]) for r in failing] == ["2.weight", "2.bias"]
        assert all("red" in str(r[3].style) and "red" in str(r[0].style) for r in failing)
        title = str(app.screen.query_one("#gc-title", Static).render())
        assert "2 of 4 fail: 2.weight, 2.bias" in title
        assert "2 (Linear)" in str(app.screen.query_one("#gc-notes", Static).render())
