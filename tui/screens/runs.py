"""The runs screen: every run of the runs folder in a table, filtered by a substring; the loss
curves of the selected runs overlaid in one plot; the config keys in which they differ. From
here a run is opened (followed live if it still trains), resumed with a new learning rate, or
replayed as a new run.

Reading run.toml files, checking checkpoints and reading event logs all happen in worker
threads; a damaged run folder is a row marked damaged, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, Static

from engine.jobs import Job, ReplayJob
from tui.engine_port import RunRow
from tui.errors import user_message
from tui.modals import offer_recovery
from tui.plotting import Trace, render_plot
from tui.series import DecimatedSeries, downsample
from tui.status import STATE_STYLES, duration

# one colour per selected run, in the plot and in the diff's column headers
RUN_COLORS = ("blue", "yellow", "green", "magenta", "cyan", "red")
RICH_COLORS = {"blue": "bright_blue", "yellow": "bright_yellow", "green": "bright_green",
               "magenta": "bright_magenta", "cyan": "bright_cyan", "red": "bright_red"}
MAX_OVERLAY = len(RUN_COLORS)
CURVE_POINTS = 1024  # per run, kept after reading its log: the plot's cost does not grow
# what tells runs apart first: narrow terminals scroll the table sideways for the rest
COLUMNS = ("", "id", "status", "steps", "final loss", "best", "time", "preset", "started")
ALIVE_POLL_S = 2.0  # how often the rows of runs still training are read again
LR_NOW = "optim.lr (now)"  # the diff's key for an lr changed while the run trained


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def decimate_curve(rows: list[tuple[int, float]], points: int = CURVE_POINTS
                   ) -> tuple[list[float], list[float]]:
    series = DecimatedSeries(points)
    for step, loss in rows:
        series.append(step, loss)
    return series.points()


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{'optim.lr': 0.1, ...}; lists are values (a model's layers compare as a whole)."""
    if not isinstance(config, dict):
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


MISSING = object()


def run_config(row: RunRow) -> dict[str, Any]:
    """A run's config as the diff compares it: with the lr it trains with now, when that was
    changed during the run (recorded in run.toml), as its own key."""
    flat = flatten(row.config)
    if row.lr is not None and flat.get("optim.lr") != row.lr:
        flat[LR_NOW] = row.lr
    return flat


def config_diff(configs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """(key, value per config) for the keys whose values are not all the same."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    out = []
    for key in keys:
        values = [f.get(key, MISSING) for f in flat]
        if any(v != values[0] for v in values[1:]):
            out.append((key, values))
    return out


def short(value: Any, width: int = 14) -> str:
    if value is MISSING:
        return "–"
    if isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def status_style(status: str) -> str:
    if status.startswith("damaged"):
        return "bold red"
    if status in ("killed",):
        return "red"
    return STATE_STYLES.get(status.split(" ")[0], "")


@dataclass(frozen=True)
class SweepItem:
    """A sweep's group row in the runs table (engine.sweep.SweepView inside)."""

    view: Any

    @property
    def path(self) -> str:
        return "sweep:" + self.view.path


def read_sweeps(engine: Any, runs_dir: Any) -> list[Any]:
    """The runs folder's sweeps (from a thread); none when they cannot be read."""
    try:
        return list(engine.sweeps(runs_dir))
    except Exception:  # an engine without sweeps, or an unreadable sweeps folder
        return []


def sweep_best(view: Any) -> tuple[float | None, str]:
    """The best value of the sweep's default metric among its runs, and the metric."""
    metric = view.default_sort
    ranked = view.sorted_runs(metric)
    value = ranked[0].metrics.get(metric) if ranked else None
    return value, metric


def sweep_cells(view: Any) -> list[Any]:
    done = sum(1 for r in view.runs if r.status not in ("waiting", "running"))
    status = Text(f"sweep {view.state} {done}/{len(view.runs)}",
                  style="bold " + (status_style(view.state) or ""))
    value, metric = sweep_best(view)
    best = "-" if value is None else (f"acc {value:.4g}" if metric == "test_accuracy"
                                      else f"val {value:.4g}" if metric == "best_val_loss"
                                      else "-")
    losses = [r.metrics["final_loss"] for r in view.runs if "final_loss" in r.metrics]
    return [Text("▸", style="bold"), Text(view.id, style="bold"), status, "-",
            f"{min(losses):.4g}" if losses else "-", best, "-", view.preset, view.created]


def show_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def sweep_line(view: Any) -> str:
    from tui.screens.sweep import status_counts

    counts = status_counts(view)
    varies = ", ".join(view.keys)
    return f"sweep {view.id}: {view.state} ({counts}); varies {varies}; enter: its table"


class OverlayPlot(Widget):
    """The loss curves of the selected runs, each already decimated to CURVE_POINTS points;
    drawing merges them further down to the plot's width, so its cost is bounded."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.curves: list[tuple[str, list[float], list[float]]] = []  # (color, xs, ys)
        self.log_y = False
        self.note = "select runs with space to overlay their loss curves"
        self._cache: tuple[tuple, Text] | None = None
        self.border_title = "Loss curves"

    def show(self, curves: list[tuple[str, list[float], list[float]]], note: str = "") -> None:
        self.curves = curves
        self.note = note
        self._cache = None
        self.refresh()

    def render(self) -> Text:
        size = self.content_region.size
        key = (id(self.curves), len(self.curves), self.log_y, size.width, size.height)
        if self._cache is None or self._cache[0] != key:
            if not any(xs for _, xs, _ in self.curves):
                text = Text(self.note or "no losses logged", style="dim")
            else:
                max_points = max(2 * size.width, 16)
                traces = []
                for color, xs, ys in self.curves:
                    dx, dy = downsample(xs, ys, max_points)
                    traces.append(Trace(dx, dy, color))
                text = render_plot(traces, size.width, size.height, log_y=self.log_y)
            self._cache = (key, text)
        return self._cache[1]


@dataclass(frozen=True)
class OpenRun:
    """The runs screen was left to open (follow) this run folder."""

    path: str


@dataclass(frozen=True)
class StartJob:
    """The runs screen was left to start this job (resume or replay) and follow it."""

    job: Job
    note: str = ""


class RunsScreen(Screen):
    """Dismissed with an OpenRun, a StartJob, or None (back)."""

    BINDINGS = [
        Binding("space", "toggle_select", "Select", id="runs-select"),
        Binding("o", "open", "Open", id="runs-open"),  # enter on a row opens it too
        Binding("u", "resume_run", "Resume", id="runs-resume"),
        Binding("y", "replay_run", "Replay", id="runs-replay"),
        Binding("slash", "focus_filter", "Filter", id="runs-filter", show=False),
        Binding("g", "toggle_log", "Log y", id="runs-log", show=False),
        Binding("R", "reload", "Reload", id="runs-reload", show=False),
        Binding("escape", "close", "Back", id="runs-back"),
    ]

    def __init__(self, runs_dir: Any = None) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.rows: list[RunRow] = []  # every run found
        self.shown: list[RunRow] = []  # after the filter
        self.selected: list[str] = []  # paths, in the order they were selected
        self.curves: dict[str, tuple[list[float], list[float]]] = {}  # path -> decimated
        self.loaded = False
        self.alive_poll_s = ALIVE_POLL_S
        self.sweeps: list[Any] = []  # engine.sweep.SweepView: a group row each, first

    # --- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Vertical(id="runs-main"):
            with Horizontal(id="runs-top"):
                yield Static("", id="runs-title")
                yield Input(placeholder="/ filter: id, preset or status", id="runs-filter-input",
                            compact=True)
            yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=False)
            with Horizontal(id="runs-bottom"):
                yield OverlayPlot(id="runs-plot")
                with VerticalScroll(id="runs-diff-box"):
                    yield Static("", id="runs-diff")
            yield Static("", id="runs-info")
        yield Footer()

    def on_mount(self) -> None:
        self._add_columns([])
        self.query_one("#runs-diff-box").border_title = "Config diff"
        where = str(self.runs_dir or "runs")
        self.query_one("#runs-title", Static).update(Text.assemble(("Runs ", "bold"),
                                                                   (f"in {where}", "dim")))
        self.query_one(DataTable).focus()
        self._show_info("reading runs…")
        self.load()
        if self.alive_poll_s > 0:
            self.set_interval(self.alive_poll_s, self.refresh_alive)

    # --- runs still training --------------------------------------------------------------
    def refresh_alive(self) -> None:
        """Read the rows of the runs still training again, in a thread: one that finished
        while the screen is open shows it."""
        paths = [r.path for r in self.rows if r.alive]
        if any(s.live for s in self.sweeps):
            self.run_worker(self._read_sweeps, thread=True, exit_on_error=False,
                            group="runs-sweeps", exclusive=True)
        if paths:
            self.run_worker(lambda: self._read_alive(paths), thread=True, exit_on_error=False,
                            group="runs-alive", exclusive=True)

    def _read_sweeps(self) -> None:
        """A live sweep again: its row's counts; a run it started since: the whole list."""
        sweeps = read_sweeps(self.app.engine, self.runs_dir)
        known = {r.path for r in self.rows}
        if any(run.run_path and run.run_path not in known for s in sweeps for run in s.runs):
            self._read_runs()
        else:
            self.app.call_from_thread(self._sweeps_read, sweeps)

    def _sweeps_read(self, sweeps: list[Any]) -> None:
        if sweeps != self.sweeps:
            self.sweeps = sweeps
            self._fill_table()
            self._show_current()

    def _read_alive(self, paths: list[str]) -> None:
        rows = []
        for path in paths:
            try:
                rows.append(self.app.engine.run_status(path))
            except Exception:  # gone meanwhile: the next reload says so
                continue
        self.app.call_from_thread(self._alive_read, rows)

    def _alive_read(self, rows: list[RunRow]) -> None:
        by_path = {r.path: r for r in rows}
        changed = False
        for i, old in enumerate(self.rows):
            new = by_path.get(old.path)
            if new is not None and new != old:
                self.rows[i] = new
                changed = True
        if changed:
            self._fill_table()
            self._show_current()
            self._draw_diff()

    # --- loading ----------------------------------------------------------------------------
    def load(self) -> None:
        self.run_worker(self._read_runs, thread=True, exit_on_error=False, group="runs-list",
                        exclusive=True)

    def _read_runs(self) -> None:
        try:
            rows = self.app.engine.runs(self.runs_dir)
        except Exception as err:  # an unreadable runs folder: say so, keep the screen
            self.app.call_from_thread(self._show_info, f"cannot list runs: {user_message(err)}",
                                      True)
            rows = []
        sweeps = read_sweeps(self.app.engine, self.runs_dir)
        self.app.call_from_thread(self._loaded, rows, sweeps)

    def _loaded(self, rows: list[RunRow], sweeps: list[Any] | None = None) -> None:
        self.rows = sorted(rows, key=lambda r: r.id, reverse=True)  # newest first
        self.sweeps = sorted(sweeps or [], key=lambda s: s.id, reverse=True)
        self.loaded = True
        paths = {r.path for r in self.rows}
        self.selected = [p for p in self.selected if p in paths]
        self._fill_table()
        damaged = sum(r.damaged for r in self.rows)
        note = f", {damaged} damaged" if damaged else ""
        sweeps_note = f", {plural(len(self.sweeps), 'sweep')}" if self.sweeps else ""
        self.query_one("#runs-title", Static).update(Text.assemble(
            ("Runs ", "bold"), (f"in {self.runs_dir or 'runs'}: {plural(len(self.rows), 'run')}",
                                "dim"), (sweeps_note, "dim"), (note, "red")))
        if not self.rows and not self.sweeps:
            self._show_info("no runs yet: start one from the main screen (escape, then s)")
        self._refresh_compare()

    def _row_cells(self, row: Any) -> list[Any]:
        if isinstance(row, SweepItem):
            return sweep_cells(row.view)
        mark = Text("●", style="bold " + RICH_COLORS[self._color(row.path)]) \
            if row.path in self.selected else Text(" ")
        status = Text(row.status, style=status_style(row.status))
        return [
            mark, row.id, status,
            f"{row.steps:,}" if isinstance(row.steps, int) else "-",
            f"{row.final_loss:.4g}" if isinstance(row.final_loss, float) else "-",
            row.best,
            duration(row.duration_s) if row.duration_s is not None else "-",
            row.preset, row.started,
        ]

    def _fill_table(self) -> None:
        table = self.query_one(DataTable)
        text = self.query_one("#runs-filter-input", Input).value.strip().lower()
        keep = self._current_item().path if self._current_item() is not None \
            and table.row_count else None
        sweeps = [SweepItem(s) for s in self.sweeps
                  if not text or text in f"{s.id} {s.preset} sweep {s.state}".lower()]
        self.shown = [*sweeps, *(r for r in self.rows
                                 if not text or text in f"{r.id} {r.preset} {r.status}".lower())]
        cells = [self._row_cells(row) for row in self.shown]
        table.clear(columns=True)
        self._add_columns(cells)
        for row, row_cells in zip(self.shown, cells, strict=True):
            table.add_row(*row_cells, key=row.path)
        if keep is not None:
            index = next((i for i, r in enumerate(self.shown) if r.path == keep), 0)
            table.move_cursor(row=index)

    def _add_columns(self, cells: list[list[Any]]) -> None:
        """Columns as wide as their widest cell, given outright: the table's own measuring
        could leave them collapsed to a few cells when rows came in before a layout."""
        table = self.query_one(DataTable)
        for i, label in enumerate(COLUMNS):
            width = max([len(label)] + [c.cell_len if isinstance(c, Text) else len(str(c))
                                        for c in (row[i] for row in cells)])
            table.add_column(label, key=label or "sel", width=max(1, width))

    def _color(self, path: str) -> str:
        i = self.selected.index(path) if path in self.selected else 0
        return RUN_COLORS[i % len(RUN_COLORS)]

    def _current_item(self) -> Any:
        """The highlighted row: a RunRow or a SweepItem."""
        table = self.query_one(DataTable)
        if not self.shown or table.cursor_row is None:
            return None
        return self.shown[min(max(table.cursor_row, 0), len(self.shown) - 1)]

    @property
    def current(self) -> RunRow | None:
        item = self._current_item()
        return item if isinstance(item, RunRow) else None

    @property
    def current_sweep(self) -> Any:
        """The highlighted sweep (engine.sweep.SweepView), or None."""
        item = self._current_item()
        return item.view if isinstance(item, SweepItem) else None

    def _show_info(self, message: str, error: bool = False) -> None:
        self.query_one("#runs-info", Static).update(Text(message,
                                                         style="red" if error else "dim"))

    # --- selection, overlay and diff ------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "runs-filter-input" and self.loaded:
            self._fill_table()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "runs-filter-input":
            self.query_one(DataTable).focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_current()
        if not self.selected:
            self._refresh_compare()

    def _show_current(self) -> None:
        row = self.current
        if self.current_sweep is not None:
            self._show_info(sweep_line(self.current_sweep))
        elif row is not None and row.problem:
            self._show_info(f"{row.id}: damaged: {row.problem}", error=True)
        elif row is not None:
            lr = f", lr {row.lr:.4g}" if row.lr is not None else ""
            reason = f": {row.reason}" if row.reason else ""  # why it failed or diverged
            self._show_info(f"{row.id}: {row.status}{lr}{reason}",
                            error=bool(reason) and row.status in ("failed", "diverged"))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_toggle_select(self) -> None:
        if self._sweep_row_note():
            return
        row = self.current
        if row is None:
            return
        if row.path in self.selected:
            self.selected.remove(row.path)
        elif len(self.selected) >= MAX_OVERLAY:
            self.notify(f"at most {MAX_OVERLAY} runs at once", severity="warning")
            return
        else:
            self.selected.append(row.path)
        table = self.query_one(DataTable)
        for shown in self.shown:
            if shown.path in self.selected or shown.path == row.path:
                table.update_cell(shown.path, "sel", self._row_cells(shown)[0])
        self._refresh_compare()

    def select(self, *paths: str) -> None:
        """Select runs by path (for tests and scripts)."""
        for path in paths:
            if path not in self.selected:
                self.selected.append(path)
        self._fill_table()
        self._refresh_compare()

    def _compared(self) -> list[RunRow]:
        by_path = {r.path: r for r in self.rows}
        if self.selected:
            return [by_path[p] for p in self.selected if p in by_path]
        if self.current_sweep is not None:  # its runs, overlaid
            return [by_path[r.run_path] for r in self.current_sweep.runs
                    if r.run_path in by_path][:MAX_OVERLAY]
        row = self.current
        return [row] if row is not None else []

    def _refresh_compare(self) -> None:
        runs = self._compared()
        missing = [r.path for r in runs if r.path not in self.curves and not r.damaged_toml]
        if missing:
            self.run_worker(lambda: self._read_curves(missing), thread=True,
                            exit_on_error=False, group="runs-curves")
        self._draw_plot(runs)
        self._draw_diff()

    def _read_curves(self, paths: list[str]) -> None:
        for path in paths:
            try:
                curve = decimate_curve(self.app.engine.curve(path))
            except Exception:  # an unreadable log: an empty curve, the row says damaged
                curve = ([], [])
            self.app.call_from_thread(self._curve_read, path, curve)

    def _curve_read(self, path: str, curve: tuple[list[float], list[float]]) -> None:
        self.curves[path] = curve
        self._draw_plot(self._compared())

    def _draw_plot(self, runs: list[RunRow]) -> None:
        curves = []
        for i, row in enumerate(runs):
            xs, ys = self.curves.get(row.path, ([], []))
            color = self._color(row.path) if self.selected else RUN_COLORS[i % len(RUN_COLORS)]
            curves.append((color, xs, ys))
        plot = self.query_one(OverlayPlot)
        if self.current_sweep is not None and not self.selected:
            plot.border_title = f"Loss curves of sweep {self.current_sweep.id}"
            plot.border_subtitle = "enter: the sweep's table"
        elif self.selected:
            names = "  ".join(f"[{RICH_COLORS[c]}]━[/] {i + 1}"
                              for i, (c, _, _) in enumerate(curves))
            plot.border_title = f"Loss curves of {len(curves)} selected runs"
            plot.border_subtitle = names
        else:
            plot.border_title = "Loss curve" + (f" of {runs[0].id}" if runs else "")
            plot.border_subtitle = "space: select runs to overlay"
        note = "reading…" if any(r.path not in self.curves for r in runs) else "no losses logged"
        plot.show(curves, note)

    def _draw_diff(self) -> None:
        runs = [r for r in self._compared() if r.config]
        diff = self.query_one("#runs-diff", Static)
        box = self.query_one("#runs-diff-box")
        if self.current_sweep is not None and not self.selected:
            view = self.current_sweep
            vary = "varies" if len(view.keys) == 1 else "vary"
            box.border_title = f"Sweep: {plural(len(view.keys), 'key')} {vary}"
            width = max([len(k) for k, _ in view.grid] + [3])
            text = Text()
            for key, values in view.grid:
                text.append(key.ljust(width), style="bold" if key in view.keys else "dim")
                text.append("  " + ", ".join(show_value(v) for v in values) + "\n")
            diff.update(text)
            return
        if len(self.selected) < 2 or len(runs) < 2:
            box.border_title = "Config diff"
            diff.update(Text("select two or more runs (space) to see the config keys in "
                             "which they differ", style="dim"))
            return
        rows = config_diff([run_config(r) for r in runs])
        differ = "key differs" if len(rows) == 1 else "keys differ"
        box.border_title = f"Config diff: {len(rows)} {differ}"
        text = Text(no_wrap=True, overflow="ellipsis")
        width = max([len(k) for k, _ in rows] + [3])
        text.append("key".ljust(width), style="bold")
        for i, row in enumerate(runs):
            text.append("  ")
            text.append(f"{i + 1}".ljust(10), style="bold " + RICH_COLORS[self._color(row.path)])
        if not rows:
            text.append("\n(the configs are the same)", style="dim")
        for key, values in rows:
            text.append("\n" + key.ljust(width), style="bold")
            for value in values:
                text.append("  " + short(value, 10).ljust(10))
        text.append("\n")
        for i, row in enumerate(runs):
            text.append(f"\n{i + 1}", style="bold " + RICH_COLORS[self._color(row.path)])
            text.append(f" {row.id}", style="dim")
        diff.update(text)

    def action_toggle_log(self) -> None:
        plot = self.query_one(OverlayPlot)
        plot.log_y = not plot.log_y
        plot.refresh()

    def action_focus_filter(self) -> None:
        self.query_one("#runs-filter-input", Input).focus()

    def action_reload(self) -> None:
        self.curves.clear()
        self.load()

    def action_close(self) -> None:
        if self.query_one("#runs-filter-input", Input).has_focus:
            self.query_one(DataTable).focus()
            return
        self.dismiss(None)

    # --- open, resume, replay ----------------------------------------------------------
    def action_open(self) -> None:
        if self.current_sweep is not None:
            self.open_sweep(self.current_sweep.path)
            return
        row = self.current
        if row is None:
            return
        if row.damaged_toml:
            self.app.report_error(f"cannot open {row.id}: damaged ({row.problem})")
            return
        self.dismiss(OpenRun(row.path))

    def action_resume_run(self) -> None:
        if self._sweep_row_note():
            return
        row = self.current
        if row is None:
            return
        if row.alive:
            self.app.report_error(f"{row.id} is still training: open it (enter) to follow it")
            return
        if row.damaged_toml:
            self.app.report_error(f"cannot resume {row.id}: damaged ({row.problem})")
            return
        if row.status not in ("stopped", "killed", "diverged", "failed", "damaged"):
            self.app.report_error(f"{row.id} is {row.status}: nothing to resume (replay it: y)")
            return
        # only what can work (engine.resume.recovery_options), asked in a thread
        reason = f"{row.reason}\n" if row.reason else ""

        def chosen(job: Job, note: str) -> None:
            self.dismiss(StartJob(job, f"{row.id}: {note}"))

        offer_recovery(self, row.path, f"Go on with {row.id} ({row.status})",
                       f"{reason}How should it go on?", row.lr or 1e-3, chosen,
                       cap=row.lr / 10 if row.lr and row.status == "diverged" else None)
        self._show_info(f"{row.id}: checking its checkpoints…")

    def action_replay_run(self) -> None:
        if self._sweep_row_note():
            return
        row = self.current
        if row is None:
            return
        if row.damaged_toml or not row.config:
            self.app.report_error(f"cannot replay {row.id}: no readable config")
            return
        self.dismiss(StartJob(ReplayJob(row.path, self._runs_dir()),
                              f"replaying {row.id} as a new run…"))

    def _sweep_row_note(self) -> bool:
        """On a sweep's row, the run keys say where its runs are; True if they did."""
        if self.current_sweep is None:
            return False
        self.notify("a sweep: enter opens its runs (or pick one of its runs below)",
                    severity="warning", timeout=4)
        return True

    def open_sweep(self, path: str) -> None:
        """The sweep as a group: its table sorted by a metric, curves, varying keys."""
        from tui.screens.sweep import SweepScreen

        view = next((s for s in self.sweeps if s.path == path), None)

        def chosen(choice: OpenRun | None) -> None:
            if choice is not None:
                self.dismiss(choice)

        self.app.push_screen(SweepScreen(path, view), chosen)

    def _runs_dir(self) -> str | None:
        return str(self.runs_dir) if self.runs_dir else None
