"""The parameter inspector: one row per parameter tensor, live; the highlighted row's histogram,
sparklines of its gradient norm and update/weight ratio over the run (a bounded history per
parameter), and (for tensors of at most 16 elements) its values. Dead parameters in red:
those whose gradient stayed zero over several snapshots (tui/run_state.py's DeadTracker),
not one unlucky batch.

The table keeps the name column in place and scrolls the others sideways (left/right) when
they do not fit; the columns a user looks at first (gradient, update ratio, dead) come first."""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical, VerticalScroll
from textual.events import Click
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from tui.run_state import zero_gradient

COLUMNS = (
    ("name", "name"),
    ("grad", "grad‖"),
    ("ratio", "upd/w"),
    ("dead", "dead"),
    ("zeros", "zero"),
    ("mean", "mean"),
    ("std", "std"),
    ("min", "min"),
    ("max", "max"),
    ("shape", "shape"),
)
BARS = " ▁▂▃▄▅▆▇█"
HISTORY = 120  # snapshots of gradient norm and update ratio kept per parameter
SPARK_EMPTY = "no history yet"


def num(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        text = f"{value:.3g}"
        return f"{value:.0f}" if "e" in text else text  # 9140, not 9.14e+03
    mantissa, _, exponent = f"{value:.1e}".partition("e")
    return f"{mantissa}e{int(exponent)}"  # '-4.2e-6': narrow columns fit 120 cells


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def row_cells(stat: Any) -> list[str]:
    shape = "×".join(str(d) for d in stat.shape) or "scalar"
    return [stat.name, num(stat.grad_norm), num(stat.update_ratio), pct(stat.dead_frac),
            pct(stat.zero_frac), num(stat.mean), num(stat.std), num(stat.min), num(stat.max),
            shape]


def histogram(counts: tuple[int, ...], edges: tuple[float, float], rows: int = 4,
              bin_width: int = 2) -> Text:
    """Vertical bars, `rows` cells tall, `bin_width` columns per bin, the value range below."""
    text = Text()
    if not counts:
        return text
    top = max(counts) or 1
    levels = [round(c / top * rows * 8) for c in counts]
    for r in range(rows, 0, -1):
        line = ""
        for level in levels:
            part = min(8, max(0, level - (r - 1) * 8))
            line += BARS[part] * bin_width
        text.append(line + "\n", style="cyan")
    lo, hi = edges
    width = bin_width * len(counts)
    text.append(num(lo).ljust(width // 2) + num(hi).rjust(width - width // 2), style="dim")
    return text


def info(stat: Any, dead: bool = False, streak: int = 0) -> Text:
    """Name, size, why it is dead, and the values themselves for small tensors."""
    text = Text()
    text.append(stat.name, style="bold red" if dead else "bold")
    shape = "×".join(str(d) for d in stat.shape) or "scalar"
    text.append(f"  {shape}, {stat.numel:,} values", style="dim")
    if zero_gradient(stat):
        why = (f"{100 * stat.dead_frac:.0f}% of units get no gradient" if stat.dead_frac
               else "gradient is exactly 0")
        seen = f" in {streak} snapshots in a row" if streak > 1 else " in this snapshot"
        if dead:
            text.append(f"\n{why}{seen} (dead)", style="red")
        else:
            text.append(f"\n{why}{seen} (one batch; not dead unless it stays)", style="dim")
    if stat.values is not None:
        text.append("\nvalues: ", style="dim")
        text.append(", ".join(f"{v:.6g}" for v in stat.values))
    return text


class ParamTable(Widget, can_focus=True):
    """The rows as one Text: far cheaper to redraw every second than a DataTable (which renders
    each cell through Rich)."""

    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False, id="param-up"),
        Binding("down", "move(1)", "Down", show=False, id="param-down"),
        Binding("home", "move(-1000000)", "First", show=False, id="param-first"),
        Binding("end", "move(1000000)", "Last", show=False, id="param-last"),
        Binding("left", "scroll_columns(-1)", "Columns left", show=False, id="param-left"),
        Binding("right", "scroll_columns(1)", "Columns right", show=False, id="param-right"),
    ]
    cursor = reactive(0)

    class Highlighted(Message):
        def __init__(self, row: int) -> None:
            super().__init__()
            self.row = row

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows: list[list[str]] = []
        self.dead: list[bool] = []
        self.widths = [len(label) for _, label in COLUMNS]
        self.first_row = 0  # first row shown
        self.first_column = 1  # first column shown after the name (scrolled sideways)
        self.hidden_right = 0  # columns that do not fit, right of those shown

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def set_stats(self, stats: list[Any], dead: set[str] | frozenset = frozenset()) -> None:
        self.rows = [row_cells(s) for s in stats]
        self.dead = [s.name in dead for s in stats]
        for row in self.rows:  # columns only grow, so numbers do not jump about
            self.widths = [max(w, len(c)) for w, c in zip(self.widths, row, strict=True)]
        self.cursor = min(self.cursor, max(0, len(self.rows) - 1))
        self.refresh()

    def clear(self) -> None:
        self.rows, self.dead = [], []
        self.widths = [len(label) for _, label in COLUMNS]
        self.cursor, self.first_row, self.first_column = 0, 0, 1
        self.refresh()

    def action_scroll_columns(self, delta: int) -> None:
        self.first_column = min(max(1, self.first_column + delta), len(COLUMNS) - 1)
        self.refresh()

    def action_move(self, delta: int) -> None:
        if self.rows:
            self.cursor = min(max(self.cursor + delta, 0), len(self.rows) - 1)

    def on_click(self, event: Click) -> None:
        row = self.first_row + event.y - 1
        if 0 <= row < len(self.rows):
            self.cursor = row

    def watch_cursor(self, row: int) -> None:
        self.post_message(self.Highlighted(row))
        self.refresh()

    def _columns(self) -> list[int]:
        """The columns shown: the name, then as many as fit from `first_column` on."""
        width = self.content_region.width or 10_000
        used = 1 + self.widths[0]
        shown = [0]
        for i in range(self.first_column, len(COLUMNS)):
            arrow = 2 if i < len(COLUMNS) - 1 else 0  # room for ▶ when more follow
            if used + 2 + self.widths[i] + arrow > width and len(shown) > 1:
                break
            used += 2 + self.widths[i]
            shown.append(i)
        self.hidden_right = len(COLUMNS) - 1 - shown[-1] if len(shown) > 1 else 0
        return shown

    def _line(self, cells: list[str], columns: list[int]) -> str:
        parts = [cells[i].ljust(self.widths[i]) if i in (0, len(COLUMNS) - 1)
                 else cells[i].rjust(self.widths[i]) for i in columns]
        return " " + "  ".join(parts) + " "

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="crop", end="")
        columns = self._columns()
        head = [label for _, label in COLUMNS]
        if self.first_column > 1:
            head[0] = ("◀ " + head[0]) if self.widths[0] >= 6 else "◀"
        line = self._line(head, columns)
        if self.hidden_right:
            line = line.rstrip() + " ▶"
        text.append(line, style="bold")
        visible = max(1, self.content_region.height - 1)
        if self.cursor < self.first_row:
            self.first_row = self.cursor
        elif self.cursor >= self.first_row + visible:
            self.first_row = self.cursor - visible + 1
        for i in range(self.first_row, min(len(self.rows), self.first_row + visible)):
            style = "bold red" if self.dead[i] else ""
            if i == self.cursor:
                style += " reverse" if self.has_focus else " underline"
            text.append("\n")
            text.append(self._line(self.rows[i], columns), style=style.strip())
        return text

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


class Inspector(Container):
    """The table, and below it the highlighted row's detail (hidden on narrow terminals unless
    the inspector is maximised: the table needs the width)."""

    ALLOW_MAXIMIZE = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Parameters"
        self.stats: dict[str, Any] = {}
        self.dead: set[str] = set()
        self.streaks: dict[str, int] = {}
        self.step = 0
        self._info_lines = 0
        # name -> (gradient norms, update ratios), the last HISTORY snapshots
        self.history: dict[str, tuple[deque[float], deque[float]]] = {}
        self._last_recorded = -1

    def compose(self) -> ComposeResult:
        yield ParamTable(id="param-table")
        with Horizontal(id="param-detail-box"):
            yield Static("", id="param-hist")
            with Vertical(id="param-side"):
                for name, label in (("grad", "grad‖"), ("ratio", "upd/w")):
                    with Horizontal(classes="spark-row"):
                        yield Static(label, classes="spark-label")
                        yield Sparkline([], id=f"spark-{name}", summary_function=max)
                        yield Static(SPARK_EMPTY, id=f"spark-{name}-empty",
                                     classes="spark-empty")
                with VerticalScroll(id="param-info-box"):
                    yield Static("select a parameter to see its histogram", id="param-info")

    def record(self, event: Any) -> None:
        """Add a ParamStats snapshot to the per-parameter history (every snapshot, also those
        not drawn)."""
        if event.step <= self._last_recorded:  # a resumed run re-logs: start over
            self.history.clear()
        self._last_recorded = event.step
        for stat in event.params:
            grads, ratios = self.history.setdefault(stat.name, (deque(maxlen=HISTORY),
                                                                deque(maxlen=HISTORY)))
            grads.append(float(stat.grad_norm or 0.0))
            if stat.update_ratio is not None:  # the snapshot at a run's end has none
                ratios.append(float(stat.update_ratio))

    def clear(self) -> None:
        self.stats = {}
        self.history.clear()
        self._last_recorded = -1
        self._spark("grad", ())
        self._spark("ratio", ())
        self.query_one(ParamTable).clear()
        self.query_one("#param-hist", Static).update("")
        self.query_one("#param-info", Static).update("")
        self.border_title = "Parameters"

    def show_stats(self, event: Any, dead: set[str] | None = None,
                   streaks: dict[str, int] | None = None, ended_at: int | None = None) -> None:
        """Show a ParamStats event (only the newest of a tick is passed in); `dead` names the
        parameters judged dead over time, `streaks` how many snapshots in a row had a zero
        gradient; `ended_at`: the step an ended run stopped at (the title says so when the
        last snapshot is older)."""
        params = [self._with_last_ratio(p) for p in event.params]
        self.stats = {p.name: p for p in params}
        self.dead = set(dead or ())
        self.streaks = dict(streaks or {})
        self.step = event.step
        title = f"Parameters at step {event.step:,}"
        if ended_at is not None and ended_at > event.step:
            title += f" (ended at {ended_at:,})"
        if self.border_title != title:
            self.border_title = title
        self.query_one(ParamTable).set_stats(params, self.dead)
        self._show_detail()

    def _with_last_ratio(self, stat: Any) -> Any:
        """The snapshot a run ends with has no update ratio (no step to compare with): show
        the last one measured instead of a dash."""
        ratios = self.history.get(stat.name, ((), ()))[1]
        if stat.update_ratio is not None or not ratios:
            return stat
        return dataclasses.replace(stat, update_ratio=ratios[-1])

    def _spark(self, name: str, values: Any) -> None:
        """A sparkline of `values` once there are two to draw; before that a placeholder
        (one value, or none, would draw a flat line that means nothing)."""
        spark = self.query_one(f"#spark-{name}", Sparkline)
        drawn = len(values) >= 2
        spark.data = list(values) if drawn else []
        if spark.display != drawn:
            spark.display = drawn
            self.query_one(f"#spark-{name}-empty", Static).display = not drawn

    def on_param_table_highlighted(self, event: ParamTable.Highlighted) -> None:
        event.stop()
        self._show_detail()

    def _show_detail(self) -> None:
        table = self.query_one(ParamTable)
        if not self.stats or table.row_count == 0:
            return
        stat = self.stats[list(self.stats)[min(table.cursor, len(self.stats) - 1)]]
        hist = self.query_one("#param-hist", Static)
        bin_width = 2 if hist.size.width >= 40 else 1
        hist.update(histogram(stat.hist_counts, stat.hist_edges, rows=3, bin_width=bin_width),
                    layout=False)
        grads, ratios = self.history.get(stat.name, ((), ()))
        self._spark("grad", grads)
        self._spark("ratio", ratios)
        text = info(stat, stat.name in self.dead, self.streaks.get(stat.name, 0))
        width = self.query_one("#param-info-box").size.width
        lines = len(text.wrap(self.app.console, max(10, width)))
        # a layout pass only when the text's height changed (the box scrolls)
        self.query_one("#param-info", Static).update(text, layout=lines != self._info_lines)
        self._info_lines = lines
