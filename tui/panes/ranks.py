"""The ranks of a distributed run: one row per process (engine/ranks.py: host, step,
samples/s, ms per step, forward ms per step, memory, heartbeat), with a straggler (a rank
much slower than the others) or a hang (no heartbeat) flagged in red.

It reads the followed run's ranks.json through the engine port in a thread every second,
never on the event loop. It shows itself when the run has more than one rank; `k` hides
or shows it (tui/actions.py: toggle-ranks)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

POLL_S = 1.0


def ranks_text(view: Any, now: float | None = None) -> Text:
    """The table as text: flagged rows in red, the flag's reason at the end of its row."""
    from engine.ranks import table_rows

    rows = table_rows(view, now)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if 2 <= i <= 6 else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=False))]  # fmt: skip
        line = "  ".join(cells)
        if n:
            text.append("\n")
        if n == 0:
            text.append(line, style="bold")
        elif row[-1]:
            text.append(line, style="bold red")
            text.append(f"  ⚠ {row[-1]}", style="red")
        else:
            text.append(line)
    return text


class RanksPane(Static):
    DEFAULT_CSS = """
    RanksPane {
        height: auto;
        max-height: 12;
        border: round $primary-darken-2;
        padding: 0 1;
        display: none;
    }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.hidden_by_user = False
        self.view: Any = None  # the last engine.ranks.RankView read

    def on_mount(self) -> None:
        self.border_title = "Ranks"
        self.set_interval(POLL_S, self.poll)

    def poll(self) -> None:
        """Ask for the followed run's rank view, in a thread."""
        screen = self.screen
        controller = getattr(screen, "controller", None)
        reader = getattr(getattr(screen, "engine", None), "ranks", None)
        run_dir = controller.run_dir if controller is not None else ""
        if not run_dir or reader is None:
            self.show_view(None)
            return
        live = controller.run_state.state == "running"  # a paused run does not hang
        self.run_worker(lambda: self._read(reader, run_dir, live), thread=True,
                        exclusive=True, group="ranks", exit_on_error=False)  # fmt: skip

    def _read(self, reader: Any, run_dir: str, live: bool) -> None:
        try:
            view = reader(run_dir, live)
        except Exception:  # a view is a convenience: an unreadable one is none
            view = None
        self.app.call_from_thread(self.show_view, view)

    def show_view(self, view: Any) -> None:
        self.view = view
        several = view is not None and view.world > 1
        self.display = several and not self.hidden_by_user
        if not several:
            return
        flagged = ", ".join(f"rank {r} {why.split(':')[0]}" for r, why in view.flags.items())
        self.border_title = f"Ranks ({view.world})" + (f" · {flagged}" if flagged else "")
        self.update(ranks_text(view))

    def toggle(self) -> None:
        self.hidden_by_user = not self.hidden_by_user
        self.show_view(self.view)
