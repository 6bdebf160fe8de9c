"""A sweep as a group (opened from the runs screen, or after starting a sweep from the form):
its runs in a table sorted by the chosen metric (`s` changes it), their statuses, the config
keys that vary, and the overlay of their loss curves.

The sweep (runs/sweeps/<id>/sweep.toml) and its runs' files are read in worker threads
through the engine port (engine.sweep.view_sweep); a live sweep is read again every couple
of seconds, with the curves of its running runs.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tui.errors import user_message
from tui.screens.runs import (
    RICH_COLORS,
    RUN_COLORS,
    OpenRun,
    OverlayPlot,
    decimate_curve,
    plural,
    status_style,
)

METRIC_LABELS = {"final_loss": "final loss", "best_val_loss": "best val loss",
                 "test_accuracy": "test acc", "n": "#"}
POLL_S = 2.0


def color_of(n: int) -> str:
    """One colour per combination, whatever the sort: the table's mark and its curve."""
    return RUN_COLORS[(n - 1) % len(RUN_COLORS)]


def show_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def status_counts(view: Any) -> str:
    """'2 finished, 1 running, 1 waiting': what the runs say (sweep.toml lags a run that
    has just ended until the runner notices)."""
    counts: dict[str, int] = {}
    for row in view.runs:
        word = row.status.split(" (")[0]
        counts[word] = counts.get(word, 0) + 1
    return ", ".join(f"{n} {word}" for word, n in counts.items())


def metric_cell(value: Any, metric: str) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.4f}" if metric == "test_accuracy" else f"{value:.4g}"


class SweepScreen(Screen):
    """Dismissed with an OpenRun (enter on a run that started) or None (back)."""

    DEFAULT_CSS = """
    #sweep-main { height: 1fr; }
    #sweep-title { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    #sweep-table {
        height: 1fr; min-height: 4; border: round $primary 40%;
        border-title-color: $text; border-subtitle-color: $text-muted;
    }
    #sweep-table:focus { border: round $primary; }
    #sweep-bottom { height: 2fr; min-height: 8; }
    #sweep-plot, #sweep-keys-box {
        border: round $primary 40%; border-title-color: $text; border-title-style: bold;
        border-subtitle-color: $text-muted; padding: 0 1; height: 1fr;
    }
    #sweep-plot { width: 3fr; }
    #sweep-keys-box { width: 2fr; }
    #sweep-keys { width: 1fr; }
    #sweep-info { height: 1; background: $panel; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    BINDINGS = [
        Binding("s", "cycle_sort", "Sort", id="sweep-sort"),
        Binding("o", "open", "Open run", id="sweep-open"),  # enter on a row opens it too
        Binding("g", "toggle_log", "Log y", id="sweep-log", show=False),
        Binding("escape", "close", "Back", id="sweep-back"),
    ]

    def __init__(self, path: str, view: Any = None, note: str = "",
                 poll_s: float = POLL_S) -> None:
        super().__init__()
        self.path = str(path)
        self.view = view  # engine.sweep.SweepView once read
        self.note = note
        self.poll_s = poll_s
        self.sort = view.default_sort if view is not None else ""
        self.shown: list[Any] = []  # SweepRunView rows, as sorted
        self.curves: dict[str, tuple[list[float], list[float]]] = {}  # run path -> decimated
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Vertical(id="sweep-main"):
            yield Static("", id="sweep-title")
            yield DataTable(id="sweep-table", cursor_type="row", zebra_stripes=False)
            with Horizontal(id="sweep-bottom"):
                yield OverlayPlot(id="sweep-plot")
                with VerticalScroll(id="sweep-keys-box"):
                    yield Static("", id="sweep-keys")
            yield Static("", id="sweep-info")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sweep-keys-box").border_title = "Varying keys"
        plot = self.query_one(OverlayPlot)
        plot.border_title = "Loss curves"
        plot.note = "no run has logged a loss yet"
        self.query_one(DataTable).focus()
        self._info(self.note or "reading the sweep…")
        if self.view is not None:
            self._show(self.view)
        self.reload()
        if self.poll_s > 0:
            self.set_interval(self.poll_s, self._poll)

    # --- reading (threads) --------------------------------------------------------------------
    def _poll(self) -> None:
        if self.view is None or self.view.live:
            self.reload()

    def reload(self) -> None:
        self.run_worker(self._read, thread=True, exit_on_error=False, group="sweep-read",
                        exclusive=True)

    def _read(self) -> None:
        engine = self.app.engine
        curves = dict(self.curves)
        try:
            view = engine.sweep(self.path)
        except Exception as err:  # gone or unreadable: say so, keep the screen
            self.app.call_from_thread(self._info, f"cannot read the sweep: {user_message(err)}",
                                      True)
            return
        # curves: the runs not read yet, and again those still training
        for row in view.runs:
            if row.run_path and (row.run_path not in curves or row.running):
                try:
                    curves[row.run_path] = decimate_curve(engine.curve(row.run_path))
                except Exception:  # nothing logged yet, or an unreadable log
                    curves[row.run_path] = ([], [])
        self.app.call_from_thread(self._show, view, curves)

    # --- showing ------------------------------------------------------------------------------
    def _show(self, view: Any, curves: dict | None = None) -> None:
        self.view = view
        if curves is not None:
            self.curves = curves
        self.loaded = True
        if self.sort not in (*view.metrics, "n"):
            self.sort = view.default_sort
        counts = status_counts(view)
        state_style = {"running": "bold green", "finished": "bold", "stopped": "yellow",
                       "cancelled": "dim"}.get(view.state, "")
        self.query_one("#sweep-title", Static).update(Text.assemble(
            ("Sweep ", "bold"), (view.id, "bold"), "  ", (view.state, state_style),
            (f" · {plural(len(view.runs), 'run')}: {counts}", "dim")))
        table = self.query_one(DataTable)
        table.border_title = "best first by " + METRIC_LABELS.get(self.sort, self.sort) \
            if self.sort != "n" else "in the order they run"
        table.border_subtitle = "s: sort by another metric"
        self._fill_table()
        self._draw_keys()
        self._draw_plot()
        if not self.note:
            self._show_current()

    def _columns(self) -> list[str]:
        view = self.view
        keys = [k.split(".")[-1] if sum(x.split(".")[-1] == k.split(".")[-1]
                                        for x in view.keys) == 1 else k for k in view.keys]
        return ["", "#", *keys, "status", *[METRIC_LABELS[m] for m in view.metrics], "run"]

    def _cells(self, row: Any) -> list[Any]:
        view = self.view
        mark = Text("●", style="bold " + RICH_COLORS[color_of(row.n)]) if row.run_path \
            else Text(" ")
        return [
            mark, str(row.n), *[show_value(row.values.get(k, "-")) for k in view.keys],
            Text(row.status, style=status_style(row.status)),
            *[metric_cell(row.metrics.get(m), m) for m in view.metrics],
            row.run or "-",
        ]

    def _fill_table(self) -> None:
        table = self.query_one(DataTable)
        keep = self.current.n if self.current is not None else None
        self.shown = self.view.sorted_runs(self.sort)
        cells = [self._cells(r) for r in self.shown]
        table.clear(columns=True)
        for i, label in enumerate(self._columns()):
            width = max([len(label)] + [c.cell_len if isinstance(c, Text) else len(str(c))
                                        for c in (row[i] for row in cells)])
            table.add_column(label, key=label or "sel", width=max(1, width))
        for row, row_cells in zip(self.shown, cells, strict=True):
            table.add_row(*row_cells, key=str(row.n))
        if keep is not None:
            table.move_cursor(row=next((i for i, r in enumerate(self.shown) if r.n == keep), 0))

    def _draw_keys(self) -> None:
        view = self.view
        text = Text()
        width = max([len(k) for k, _ in view.grid] + [3])
        for key, values in view.grid:
            if key not in view.keys:
                continue
            text.append(key.ljust(width), style="bold")
            text.append("  " + ", ".join(show_value(v) for v in values) + "\n")
        fixed = [(k, v[0]) for k, v in view.grid if k not in view.keys]
        for key, value in fixed:
            text.append(key.ljust(width), style="dim")
            text.append(f"  {show_value(value)}\n", style="dim")
        text.append(f"\npreset {view.preset} · {view.created}", style="dim")
        self.query_one("#sweep-keys", Static).update(text)

    def _draw_plot(self) -> None:
        curves = []
        legend = []
        for row in self.shown:
            if not row.run_path:
                continue
            xs, ys = self.curves.get(row.run_path, ([], []))
            curves.append((color_of(row.n), xs, ys))
            legend.append(f"[{RICH_COLORS[color_of(row.n)]}]━[/] {row.n}")
        plot = self.query_one(OverlayPlot)
        plot.border_title = f"Loss curves of {plural(len(curves), 'run')}" if curves \
            else "Loss curves"
        plot.border_subtitle = "  ".join(legend)
        plot.show(curves, "no run has started yet" if not curves else
                  "no run has logged a loss yet")

    def _info(self, message: str, error: bool = False) -> None:
        self.query_one("#sweep-info", Static).update(Text(message,
                                                          style="red" if error else "dim"))

    @property
    def current(self) -> Any:
        table = self.query_one(DataTable)
        if not self.shown or table.cursor_row is None:
            return None
        return self.shown[min(max(table.cursor_row, 0), len(self.shown) - 1)]

    def _show_current(self) -> None:
        row = self.current
        if row is None:
            return
        values = ", ".join(f"{k}={show_value(v)}" for k, v in row.values.items())
        where = f": {row.run} (enter opens it)" if row.run else ""
        self._info(f"#{row.n} {values}: {row.status}{where}")

    # --- keys ---------------------------------------------------------------------------------
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.loaded:
            self.note = ""
            self._show_current()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_cycle_sort(self) -> None:
        if self.view is None:
            return
        order = [*self.view.metrics, "n"]
        self.sort = order[(order.index(self.sort) + 1) % len(order)] if self.sort in order \
            else order[0]
        self.note = ""
        self._show(self.view)
        self.notify(f"sorted by {METRIC_LABELS.get(self.sort, self.sort)}", timeout=2)

    def action_toggle_log(self) -> None:
        plot = self.query_one(OverlayPlot)
        plot.log_y = not plot.log_y
        plot.refresh()

    def action_open(self) -> None:
        row = self.current
        if row is None:
            return
        if not row.run_path:
            self.app.notify(f"#{row.n} has not started ({row.status})", severity="warning")
            return
        self.dismiss(OpenRun(row.run_path))

    def action_close(self) -> None:
        self.dismiss(None)
