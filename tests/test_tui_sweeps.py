"""The app's half of sweeps: a sweep is a group on the runs screen (its runs sorted by a metric,
their curves, the keys that vary), and a list of values in a form field starts one.

Real sweeps in a tmp runs folder: one whose runs are trained in this process (run_sync), and
one started from the form (a detached runner and its workers, killed at teardown if left)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static
from tui_tool_fakes import ToolsEngine, fake_sweep

from tui.app import make_app
from tui.panes.params_form import ParamsForm
from tui.screens.runs import RunsScreen
from tui.screens.sweep import SweepScreen
from tui_fakes import kill_workers, wait_for

SIZE = (120, 40)


def rows_of(screen) -> list[list[str]]:
    table = screen.query_one(DataTable)
    return [[str(c) for c in table.get_row(row.key)] for row in table.ordered_rows]


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory) -> Path:
    """A finished sweep of three kink runs with different lrs, trained here."""
    from engine.api import run_sync
    from engine.sweep import combo_config, create_sweep, locked, plan_sweep

    root = tmp_path_factory.mktemp("sweep-group") / "runs"
    plan = plan_sweep("kink", ["optim.lr=0.0003,0.003,0.001"],
                      ["train.epochs=5", "train.threads=1"], runs_dir=root)
    sweep = create_sweep(plan)
    for combo in sweep.combos:
        seen = []
        run_sync(combo_config(sweep, combo), root, sinks=[seen.append])
        with locked(sweep.path) as current:
            entry = current.combo(combo["n"])
            entry["status"], entry["run"] = "done", Path(seen[0].run_dir).name
    return root


async def test_the_runs_screen_shows_a_sweep_as_a_group_sorted_by_its_metric(sweep_root):
    from engine.sweep import list_sweeps

    sweep = list_sweeps(sweep_root)[0]
    app = make_app(runs_dir=sweep_root, background_delay_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded,
                       what="the runs list")
        runs = app.screen
        first = rows_of(runs)[0]  # the group row comes first, the cursor on it
        assert first[1] == sweep.id and first[2] == "sweep finished 3/3", first
        assert runs.current_sweep is not None and runs.current is None
        assert "varies optim.lr" in str(runs.query_one("#runs-info", Static).render())
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen) and app.screen.loaded
                       and len(app.screen.curves) == 3, what="the sweep group and its curves")
        group = app.screen
        rows = rows_of(group)
        assert [r[2] for r in rows] and all(r[3] == "finished" for r in rows), rows
        losses = [float(r[4]) for r in rows]
        assert losses == sorted(losses) and len(set(losses)) == 3  # best first
        assert group.query_one(DataTable).border_title == "best first by final loss"
        assert "optim.lr" in str(group.query_one("#sweep-keys", Static).render())
        assert len(group.query_one("#sweep-plot").curves) == 3
        await pilot.press("s")  # the next metric kink has: none, so the run order
        assert [r[1] for r in rows_of(group)] == ["1", "2", "3"]
        assert [r[2] for r in rows_of(group)] == ["0.0003", "0.003", "0.001"]
        await pilot.press("s")
        assert [float(r[4]) for r in rows_of(group)] == losses
        await pilot.press("escape", "escape")
        assert app.screen is app.main_screen


async def test_a_list_in_a_form_field_says_it_is_a_sweep_and_checks_each_value():
    engine = ToolsEngine(sweep=fake_sweep("running"))
    app = make_app(runs_dir="runs", engine=engine, tick_s=3600.0, background_delay_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        form = app.main_screen.query_one(ParamsForm)
        await wait_for(pilot, lambda: form.config is not None, what="the form")
        lr = form.query_one("#f-lr", Input)
        lr.value = "0.001, oops"
        await wait_for(pilot, lambda: form.config is None, what="the bad value")
        assert "value 2 of the list" in " ".join(form.errors)
        lr.value = "[0.001, 0.003, 0.01]"
        await wait_for(pilot, lambda: form.config is not None, what="the list")
        assert form.sweep_values == {"optim.lr": [0.001, 0.003, 0.01]}
        assert str(form.query_one("#form-errors", Static).render()) == \
            "sweep: lr 0.001, 0.003, 0.01 → 3 runs"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen), what="the group")
        assert engine.started == []  # no single run
        (config, grid, _runs_dir, _sets), = engine.started_sweeps
        assert grid == [("optim.lr", [0.001, 0.003, 0.01])] and config["optim"]["lr"] == 0.001
        assert "in the background" in app.main_screen.message


@pytest.fixture
def reap(tmp_path):
    """Whatever a test leaves running (the sweep runner, a worker) is killed."""
    yield
    from engine.sweep import list_sweeps

    root = tmp_path / "runs"
    for sweep in list_sweeps(root):
        if sweep.runner_alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(sweep.info["runner_pid"], signal.SIGKILL)
    kill_workers(root)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


async def test_start_with_a_list_runs_a_detached_sweep_and_shows_its_group(tmp_path, reap):
    from engine.rundir import process_alive
    from engine.sweep import list_sweeps

    app = make_app(runs_dir=tmp_path / "runs", background_delay_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        form = app.main_screen.query_one(ParamsForm)
        await wait_for(pilot, lambda: form.config is not None, what="the form")
        form.query_one("#f-lr", Input).value = "0.001,0.003"
        form.query_one("#f-length", Input).value = "3"
        await wait_for(pilot, lambda: form.sweep_values and form.config is not None
                       and form.config["train"]["epochs"] == 3, what="the list")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen), what="the group")
        group = app.screen
        await wait_for(pilot, lambda: group.view is not None and group.view.state == "finished"
                       and len(group.curves) == 2, timeout=180, what="the sweep to finish")
        rows = rows_of(group)
        assert sorted(r[2] for r in rows) == ["0.001", "0.003"]
        assert [r[3] for r in rows] == ["finished", "finished"]
    sweep, = list_sweeps(tmp_path / "runs")
    assert [c["status"] for c in sweep.combos] == ["done", "done"]
    assert not process_alive(sweep.info.get("runner_pid") or 0) or not sweep.runner_alive


@pytest.mark.parametrize(
    "text, value, listed",
    [
        ("0.01", 0.01, None),
        ("0.001,0.003,0.01", 0.001, [0.001, 0.003, 0.01]),
        ("[0.001, 0.003]", 0.001, [0.001, 0.003]),
        ("[0.001]", 0.001, None),  # one value in brackets: not a sweep
    ],
)
def test_form_lists_parse_to_a_first_value_and_the_sweep(text, value, listed):
    from tui.panes.params_form import parse_value
    from tui.sweep_form import parse_listed

    sweep: dict = {}
    assert parse_listed("optim.lr", text, parse_value, sweep) == value
    assert sweep == ({"optim.lr": listed} if listed else {})


@pytest.mark.parametrize(
    "text, words",
    [("0.001,,0.01", "an empty value"), ("0.001,-1", "value 2 of the list"),
     ("0.001,0.001", "in the list twice")],
)
def test_bad_form_lists_say_which_value(text, words):
    from tui.panes.params_form import parse_value
    from tui.sweep_form import parse_listed

    with pytest.raises(ValueError, match=words):
        parse_listed("optim.lr", text, parse_value, {})


def test_a_grid_too_big_for_the_form_is_refused_with_the_command_to_use():
    from tui.sweep_form import describe, runs_in, too_big

    sweep = {"optim.lr": [0.1 * i for i in range(1, 10)], "train.seed": list(range(10))}
    assert runs_in(sweep) == 90 and "torchdeck sweep" in too_big(sweep)
    assert too_big({"optim.lr": [0.1, 0.2]}) == ""
    assert describe({"optim.lr": [0.1, 0.2], "train.seed": [1, 2]}) == \
        "sweep: lr 0.1, 0.2; seed 1, 2 → 4 runs"


async def test_a_sweep_that_cannot_start_says_why():
    from engine.errors import ConfigError

    class Refusing(ToolsEngine):
        def start_sweep(self, *args):
            raise ConfigError("runs folder /nope: cannot create it")

    app = make_app(runs_dir="runs", engine=Refusing(), tick_s=3600.0, background_delay_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        form = app.main_screen.query_one(ParamsForm)
        await wait_for(pilot, lambda: form.config is not None, what="the form")
        form.query_one("#f-lr", Input).value = "0.1,0.2"
        await wait_for(pilot, lambda: form.sweep_values, what="the list")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "cannot start the sweep" in app.main_screen.message,
                       what="the error")
        assert "/nope" in app.main_screen.message and app.screen is app.main_screen
