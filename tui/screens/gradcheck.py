"""The gradient check (`G` on the main screen): autograd against central finite differences in
float64 for each parameter tensor of the form's model, and each custom autograd Function it
calls (engine.gradcheck), as a table; failing rows in red. On dense-relu and legendre-sin the
tutorials' hand-derived gradients are shown below it.

The check runs through the engine port (a child process) from a worker thread, which posts
typed messages; leaving the screen cancels it.
"""

from __future__ import annotations

import threading
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tui.errors import user_message

# what decides first: narrow terminals scroll the table sideways for the rest
COLUMNS = ("name", "max abs err", "max rel err", "result", "shape", "checked", "module")


class GradcheckDone(Message):
    """`report`: an engine.gradcheck.GradReport (plain values)."""

    def __init__(self, report: Any) -> None:
        super().__init__()
        self.report = report


class GradcheckFailed(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


def _num(value: float) -> str:
    return "-" if value != value else f"{value:.2e}"


def row_cells(row: Any) -> list[Any]:
    bad = "bold red"
    result = Text("pass", style="green") if row.ok else \
        Text("FAIL" + (f" ({row.note})" if row.note else ""), style=bad)
    short = row.name.rpartition(".")[2] if row.kind == "function" else row.name
    name = Text(short, style=bad if not row.ok else "")
    if row.kind == "function":
        name.append(" (Function)", style="dim")
    return [name, _num(row.max_abs), _num(row.max_rel), result, row.shape,
            f"{row.checked}/{row.total}", row.module]


class GradcheckScreen(Screen):
    """Dismissed with None (esc)."""

    DEFAULT_CSS = """
    #gc-box {
        height: 1fr; border: round $primary; padding: 0 1;
        border-title-style: bold; border-subtitle-color: $text-muted;
    }
    #gc-title { height: auto; }
    #gc-table { height: auto; max-height: 1fr; margin: 1 0 0 0; }
    #gc-notes { height: auto; margin: 1 0 0 0; }
    """

    BINDINGS = [Binding("escape", "close", "Back", id="gc-close")]

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.report: Any = None
        self.error = ""
        self._cancel = threading.Event()

    def compose(self) -> ComposeResult:
        with Vertical(id="gc-box"):
            yield Static("", id="gc-title")
            yield DataTable(id="gc-table", cursor_type="row", zebra_stripes=False)
            yield Static("", id="gc-notes")
        yield Footer()

    def on_mount(self) -> None:
        box = self.query_one("#gc-box")
        box.border_title = f"Gradient check: {self.config['name']}"
        box.border_subtitle = "float64, CPU, a fresh model: nothing is written"
        self.query_one("#gc-title", Static).update(Text(
            "checking: autograd against central finite differences, float64 on the CPU…",
            style="dim"))
        self.query_one("#gc-table").display = False
        self.run_check()

    def on_unmount(self) -> None:
        self._cancel.set()

    @work(thread=True, exit_on_error=False, group="gradcheck")
    def run_check(self) -> None:
        try:
            report = self.app.engine.gradcheck(self.config, self._cancel.is_set)
        except Exception as err:
            self.post_message(GradcheckFailed(user_message(err)))
            return
        if report is not None:
            self.post_message(GradcheckDone(report))

    def on_gradcheck_done(self, message: GradcheckDone) -> None:
        from engine.gradcheck import ATOL, RTOL, STEP

        report = self.report = message.report
        failing = report.failing
        title = Text()
        if report.ok:
            title.append(f"all {len(report.rows)} gradients match", "bold green")
        else:
            names = ", ".join(r.name for r in failing)
            title.append(f"{len(failing)} of {len(report.rows)} fail: {names}", "bold red")
        title.append(f"\n{report.batch} samples, loss {report.loss:.6g}; central differences, "
                     f"h={STEP:g}; pass: |autograd - numeric| <= {ATOL:g} + {RTOL:g} |numeric|",
                     "dim")
        self.query_one("#gc-title", Static).update(title)
        table = self.query_one(DataTable)
        table.display = True
        table.clear(columns=True)
        cells = [row_cells(r) for r in report.rows]
        for i, label in enumerate(COLUMNS):
            width = max([len(label)] + [c.cell_len if isinstance(c, Text) else len(str(c))
                                        for c in (row[i] for row in cells)])
            table.add_column(label, key=label, width=width)
        for row, row_cell in zip(report.rows, cells, strict=True):
            table.add_row(*row_cell, key=row.name)
        notes = Text()
        if not report.ok:
            modules = sorted({r.module for r in failing if r.kind == "parameter"})
            if modules:
                notes.append(f"failing parameters belong to: {', '.join(modules)}\n", "red")
        if report.hand:
            notes.append(f"hand-derived gradients ({report.hand_formula}):\n", "bold")
            for h in report.hand:
                more = " …" if len(h.hand) > 4 else ""
                hand = " ".join(f"{v:.6g}" for v in h.hand[:4]) + more
                auto = " ".join(f"{v:.6g}" for v in h.autograd[:4]) + more
                notes.append(f"{h.name}: hand {hand} | autograd {auto} | max diff "
                             f"{_num(h.max_abs)}\n")
        self.query_one("#gc-notes", Static).update(notes)
        table.focus()

    def on_gradcheck_failed(self, message: GradcheckFailed) -> None:
        self.error = message.text
        self.query_one("#gc-title", Static).update(
            Text(f"the gradient check failed: {message.text}", style="bold red"))

    def action_close(self) -> None:
        self.dismiss(None)
