"""The runs screen, attach and the NaN guard against real (tiny) runs made in a tmp runs folder.

The runs are trained once per module with engine.api.run_sync (in this process); the only
workers started are resume jobs, and every one is killed at teardown, even on failure.
"""

from __future__ import annotations

import asyncio
import shutil
import tomllib
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from tui.app import make_app
from tui.modals import RecoveryDialog
from tui.panes.loss_plot import LossPlot
from tui.panes.params_form import ParamsForm
from tui.screens.runs import OverlayPlot, RunsScreen
from tui_fakes import kill_workers, wait_for

SIZE = (120, 40)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two kink runs differing in lr and seed, a diverged run, and three damaged folders."""
    from engine.api import run_sync
    from engine.presets import resolve_config

    root = tmp_path_factory.mktemp("runs-screen") / "runs"
    made: dict[str, Path] = {}

    def train(key: str, preset: str, sets: list[str]) -> None:
        seen = []
        run_sync(resolve_config(preset, sets), root, sinks=[seen.append])
        made[key] = Path(seen[0].run_dir)

    train("a", "kink", ["train.epochs=20"])
    train("b", "kink", ["train.epochs=20", "optim.lr=0.002", "train.seed=2"])
    train("diverged", "neuron-linear", ["optim.lr=5", "train.checkpoint_every_s=0"])
    # damaged: no run.toml; a run.toml with a TOML syntax error; a truncated last.pt
    made["no-toml"] = root / "20000101-000000-no-toml"
    made["no-toml"].mkdir()
    made["bad-toml"] = root / "20000101-000001-bad-toml"
    made["bad-toml"].mkdir()
    (made["bad-toml"] / "run.toml").write_text("[run\nid = 'x'\n")
    made["bad-ckpt"] = root / "20000101-000002-bad-ckpt"
    shutil.copytree(made["a"], made["bad-ckpt"])
    last = made["bad-ckpt"] / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:200])
    made["root"] = root
    return made


@pytest.fixture
def reap(runs):
    """Kill every worker a test started (recorded in the runs folder) at teardown."""
    yield
    kill_workers(runs["root"])


@pytest.fixture(autouse=True)
def _quick_idle(monkeypatch):
    async def short_wait(min_sleep: float = 0.0, max_sleep: float = 1.0) -> None:
        await asyncio.sleep(0.02)

    monkeypatch.setattr("textual.pilot.wait_for_idle", short_wait)
    monkeypatch.setattr("textual.app.wait_for_idle", short_wait)


async def open_runs(pilot) -> RunsScreen:
    await pilot.press("R")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen)
                   and pilot.app.screen.loaded, what="the runs list")
    return pilot.app.screen


def table_text(screen: RunsScreen) -> dict[str, list[str]]:
    table = screen.query_one(DataTable)
    return {str(row.key.value): [str(c) for c in table.get_row(row.key)]
            for row in table.ordered_rows}


async def test_runs_screen_overlays_two_runs_and_diffs_their_configs(tmp_path, runs):
    app = make_app(runs_dir=runs["root"], tick_s=0.1, background_delay_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_runs(pilot)
        rows = table_text(screen)
        a, b = str(runs["a"]), str(runs["b"])
        assert rows[a][2] == "finished" and rows[a][3] == "200" and rows[a][7] == "kink"
        assert rows[str(runs["diverged"])][2] == "diverged"
        table = screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index(a))
        await pilot.press("space")
        table.move_cursor(row=table.get_row_index(b))
        await pilot.press("space")
        assert screen.selected == [a, b]
        await wait_for(pilot, lambda: a in screen.curves and b in screen.curves, what="curves")
        await pilot.pause()
        plot = screen.query_one(OverlayPlot)
        assert [len(xs) for _, xs, _ in plot.curves] == [200, 200]
        assert [c for c, _, _ in plot.curves] == ["blue", "yellow"]
        assert "2 selected" in plot.border_title
        diff = str(screen.query_one("#runs-diff", Static).render())
        lines = {line.split()[0]: line.split()[1:] for line in diff.splitlines()[1:]
                 if "." in line.split(" ")[0]}
        assert set(lines) == {"optim.lr", "train.seed"}, diff  # only what differs
        assert lines["optim.lr"] == ["0.001", "0.002"] and lines["train.seed"] == ["1", "2"]
        # the filter narrows the table; the selection stays
        screen.query_one("#runs-filter-input", Input).value = "diverged"
        await pilot.pause()
        assert list(table_text(screen)) == [str(runs["diverged"])]
        screen.query_one("#runs-filter-input", Input).value = ""
        await pilot.pause()
        assert screen.selected == [a, b]
        # enter opens the highlighted run in the main screen, its whole curve
        table.focus()
        table.move_cursor(row=table.get_row_index(b))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.controller.run_state.state == "finished",
                       what="the open run")
        assert not isinstance(app.screen, RunsScreen)
        assert app.query_one(LossPlot).model.train.total == 200
        assert app.controller.run_state.lr == 0.002


async def test_damaged_run_folders_are_listed_as_damaged(tmp_path, runs, reap):
    app = make_app(runs_dir=runs["root"], tick_s=0.1, background_delay_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_runs(pilot)
        rows = table_text(screen)
        for key in ("no-toml", "bad-toml", "bad-ckpt"):
            assert rows[str(runs[key])][2] == "damaged", rows[str(runs[key])]
        assert "3 damaged" in str(screen.query_one("#runs-title", Static).render())
        table = screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index(str(runs["bad-toml"])))
        # wait for the info line to follow the cursor (never a fixed pause)
        await wait_for(pilot, lambda: "run.toml unreadable" in str(
            screen.query_one("#runs-info", Static).render()), what="the damaged run's info")
        await pilot.press("enter")  # cannot open: a message, no crash
        await pilot.pause()
        assert "cannot open" in app.main_screen.message and "damaged" in app.main_screen.message
        await pilot.press("space")  # selecting it with a good run: no crash, no curve
        table.move_cursor(row=table.get_row_index(str(runs["a"])))
        await pilot.press("space")
        await pilot.pause()
        # resuming the run whose last.pt is truncated: the engine's one-line error
        table.move_cursor(row=table.get_row_index(str(runs["bad-ckpt"])))
        await pilot.press("u")  # a finished run: the engine offers nothing, and says so
        await wait_for(pilot, lambda: "nothing to resume" in app.main_screen.message,
                       timeout=30, what="the answer about the damaged run")
        assert not isinstance(app.screen, RecoveryDialog)
        assert app.is_running
        assert app.query_one(ParamsForm).config is not None  # the app still works


async def test_attach_shows_the_whole_curve_of_a_finished_run(tmp_path, runs):
    app = make_app(runs_dir=runs["root"], tick_s=0.1, background_delay_s=0.0,
                   attach=str(runs["a"]))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.controller.run_state.state == "finished",
                       what="the history")
        assert app.query_one(LossPlot).model.train.total == 200
        assert app.controller.run_state.step == 200 and app.controller.run_state.preset == "kink"
        assert app.query_one("#inspector").step > 0  # from the last params event
        status = str(app.query_one("#status", Static).render())
        assert "FINISHED" in status and "step 200/200" in status
        main = app.main_screen
        assert not main.check_action("pause", ()) and not main.check_action("stop", ())


async def test_diverged_run_offers_to_resume_with_a_lower_lr(tmp_path, runs, reap):
    # a copy, so the module's diverged run stays as it is for the other tests
    run_dir = runs["root"].parent / "diverged-copy" / runs["diverged"].name
    shutil.copytree(runs["diverged"], run_dir)
    app = make_app(runs_dir=run_dir.parent, tick_s=0.1, background_delay_s=0.0,
                   attach=str(run_dir))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, RecoveryDialog),
                           timeout=30, what="the offer")
            assert app.controller.run_state.state == "diverged"
            dialog = app.screen
            note = str(dialog.query_one("#recovery-note", Static).render())
            assert "diverged at step" in note
            assert dialog.query_one("#recovery-lr", Input).value == "0.5"  # lr 5 / 10
            await pilot.press("enter")  # resume with lr 0.5, from the last good checkpoint

            def resumed() -> bool:
                with open(run_dir / "run.toml", "rb") as fh:
                    return tomllib.load(fh)["run"].get("resumed") == 1

            await wait_for(pilot, resumed, timeout=30, what="the resume job")
            await wait_for(pilot, lambda: app.controller.run_state.state != "starting"
                           and app.controller.run_state.step > 0, timeout=30,
                           what="the resumed run")
            changes = tomllib.loads((run_dir / "run.toml").read_text()).get("changes", [])
            assert any(c["key"] == "optim.lr" and c["new"] == 0.5 for c in changes)
    finally:
        kill_workers(run_dir.parent)
