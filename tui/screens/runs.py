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

from engine.jobs import Job, ReplayJob, ResumeJob
from tui.engine_port import RunRow
from tui.errors import user_message
from tui.modals import ResumeDialog
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
        if paths:
            self.run_worker(lambda: self._read_alive(paths), thread=True, exit_on_error=False,
                            group="runs-alive", exclusive=True)

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
        self.app.call_from_thread(self._loaded, rows)

    def _loaded(self, rows: list[RunRow]) -> None:
        self.rows = sorted(rows, key=lambda r: r.id, reverse=True)  # newest first
        self.loaded = True
        paths = {r.path for r in self.rows}
        self.selected = [p for p in self.selected if p in paths]
        self._fill_table()
        damaged = sum(r.damaged for r in self.rows)
        note = f", {damaged} damaged" if damaged else ""
        self.query_one("#runs-title", Static).update(Text.assemble(
            ("Runs ", "bold"), (f"in {self.runs_dir or 'runs'}: {plural(len(self.rows), 'run')}",
                                "dim"), (note, "red")))
        if not self.rows:
            self._show_info("no runs yet: start one from the main screen (escape, then s)")
        self._refresh_compare()

    def _row_cells(self, row: RunRow) -> list[Any]:
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
        self.shown = [r for r in self.rows
                      if not text or text in f"{r.id} {r.preset} {r.status}".lower()]
        keep = self.current.path if self.current is not None and table.row_count else None
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

    @property
    def current(self) -> RunRow | None:
        table = self.query_one(DataTable)
        if not self.shown or table.cursor_row is None:
            return None
        return self.shown[min(max(table.cursor_row, 0), len(self.shown) - 1)]

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
        if row is not None and row.problem:
            self._show_info(f"{row.id}: damaged: {row.problem}", error=True)
        elif row is not None:
            lr = f", lr {row.lr:.4g}" if row.lr is not None else ""
            self._show_info(f"{row.id}: {row.status}{lr}")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_toggle_select(self) -> None:
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
        for row in runs:
            xs, ys = self.curves.get(row.path, ([], []))
            color = self._color(row.path) if self.selected else RUN_COLORS[0]
            curves.append((color, xs, ys))
        plot = self.query_one(OverlayPlot)
        if self.selected:
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
        row = self.current
        if row is None:
            return
        if row.damaged_toml:
            self.app.report_error(f"cannot open {row.id}: damaged ({row.problem})")
            return
        self.dismiss(OpenRun(row.path))

    def action_resume_run(self) -> None:
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
        lr = row.lr or 1e-3
        if row.status == "diverged":
            lr /= 10
            note = "It diverged: it continues from its last good checkpoint (best.pt)."
        else:
            note = "It continues from checkpoints/last.pt, in the same run folder."
        path = row.path

        def chosen(value: float | None) -> None:
            if value is None:
                return
            overrides = [] if row.lr is not None and value == row.lr else [f"optim.lr={value!r}"]
            self.dismiss(StartJob(ResumeJob(path, self._runs_dir(), tuple(overrides)),
                                  f"resuming {row.id}…"))

        self.app.push_screen(ResumeDialog(f"Resume {row.id} ({row.status})", lr, note), chosen)

    def action_replay_run(self) -> None:
        row = self.current
        if row is None:
            return
        if row.damaged_toml or not row.config:
            self.app.report_error(f"cannot replay {row.id}: no readable config")
            return
        self.dismiss(StartJob(ReplayJob(row.path, self._runs_dir()),
                              f"replaying {row.id} as a new run…"))

    def _runs_dir(self) -> str | None:
        return str(self.runs_dir) if self.runs_dir else None
