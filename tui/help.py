"""The help screen (`?`): every key of the app, from the one table in tui/actions.py (and the
runs screen's and the inspector's own), with the user's keymap applied. Esc or `?` closes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.actions import APP_ACTIONS, FIELD_KEYS, KEY_NAMES, MAIN_ACTIONS

# the plot and pane keys: a section of their own
PANE_ACTIONS = ("plot-view", "toggle-log", "toggle-window", "smoothing", "toggle-fit", "zoom",
                "toggle-ranks")


def _key(key: str) -> str:
    return ", ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in key.split(","))


def sections(keymap: dict[str, str] | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """(section, [(keys, what they do)]) for every binding, with `keymap` (binding id ->
    keys) applied."""
    from tui.panes.inspector import ParamTable
    from tui.screens.runs import RunsScreen

    keymap = keymap or {}

    def rows(bindings: Iterable[tuple[str, str, str]]) -> list[tuple[str, str]]:
        return [(_key(keymap.get(bid, key)), text) for bid, key, text in bindings]

    actions = (*MAIN_ACTIONS, *APP_ACTIONS)
    main = rows((a.id, a.key, a.title or a.label) for a in actions if a.id not in PANE_ACTIONS)
    main.append(("ctrl+p", "Command palette"))
    panes = rows((a.id, a.key, a.title or a.label) for a in actions if a.id in PANE_ACTIONS)
    fields = merged([(_key(k), t) for k, t in FIELD_KEYS])
    runs = [(f"{keys}, enter", "Open the highlighted run") if bid == "runs-open" else
            (keys, text) for bid, (keys, text) in
            zip([b.id for b in RunsScreen.BINDINGS],
                rows((b.id or "", b.key, b.description) for b in RunsScreen.BINDINGS),
                strict=True)]
    table = rows((b.id or "", b.key, b.description) for b in ParamTable.BINDINGS)
    # up/down, home/end, left/right: a pair a row
    table = [(f"{a[0]}, {b[0]}", pair(a[1], b[1]))
             for a, b in zip(table[::2], table[1::2], strict=False)] + table[len(table) // 2 * 2:]
    return [("Main screen", main), ("In a form field (letters type)", fields),
            ("Plots and panes", panes), ("Runs screen (R)", runs),
            ("Parameter inspector", table)]


def merged(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Rows that do the same, as one: 'enter, ctrl+s  Start the run'."""
    out: list[tuple[str, str]] = []
    for keys, text in rows:
        same = next((i for i, (_, t) in enumerate(out) if t == text), None)
        if same is None:
            out.append((keys, text))
        else:
            out[same] = (f"{out[same][0]}, {keys}", text)
    return out


def pair(a: str, b: str) -> str:
    """'Up / down', 'Columns left / right'."""
    first, _, rest = b.partition(" ")
    if rest and a.startswith(first + " "):
        return f"{a} / {rest}"
    return f"{a} / {b.lower()}"


def height(part: list, gap: int = 1) -> int:
    """Lines of a column: each section's title and rows, `gap` blank lines between."""
    return sum(len(rows) + 1 for _, rows in part) + gap * max(0, len(part) - 1)


def split(groups: list[tuple[str, list[tuple[str, str]]]], columns: int, gap: int = 1
          ) -> list[list[tuple[str, list[tuple[str, str]]]]]:
    """The sections in `columns` columns (1 or 2), in order, the taller column as short as
    it can be: the keys fit an 80x24 terminal without scrolling."""
    if columns < 2 or len(groups) < 2:
        return [groups]
    cut = min(range(1, len(groups)),
              key=lambda k: max(height(groups[:k], gap), height(groups[k:], gap)))
    return [groups[:cut], groups[cut:]]


class HelpScreen(ModalScreen):
    """The keys in two columns (one below 70 columns), so that 80x24 shows them all."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help-close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            with Horizontal(id="help-columns"):
                yield Static("", id="help-text", classes="help-column")
                yield Static("", id="help-text-2", classes="help-column")

    def on_mount(self) -> None:
        box = self.query_one("#help-box")
        box.border_title = "Keys"
        box.border_subtitle = "esc or ? closes"
        self._fill()

    def on_resize(self) -> None:
        self._fill()

    def _fill(self) -> None:
        keymap = dict(getattr(self.app, "_keymap", {}) or {})
        columns = 2 if self.app.size.width >= 70 else 1
        groups = sections(keymap)
        parts = split(groups, columns)
        self._gap = 1
        if max(height(p) for p in parts) > self.app.size.height - 2:  # tight: no blank lines
            parts, self._gap = split(groups, columns, gap=0), 0
        for i, static in enumerate(self.query(".help-column").results(Static)):
            static.display = i < len(parts)
            static.update(self._text(parts[i]) if i < len(parts) else "")

    def _text(self, groups: list[tuple[str, list[tuple[str, str]]]]) -> Group:
        width = max((len(keys) for _, rows in groups for keys, _ in rows), default=1)
        parts: list[Any] = []
        for title, rows in groups:
            if parts and getattr(self, "_gap", 1):
                parts.append(Text(""))
            parts.append(Text(title, style="bold underline"))
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold cyan", no_wrap=True, width=width)
            grid.add_column(ratio=1)
            for keys, what in rows:
                grid.add_row(keys, what)
            parts.append(grid)
        return Group(*parts)

    def action_close(self) -> None:
        self.dismiss(None)
