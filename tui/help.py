"""The help screen (`?`): every key of the app, from the one table in tui/actions.py (and the
runs screen's and the inspector's own), with the user's keymap applied. Esc or `?` closes it.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.actions import APP_ACTIONS, FIELD_KEYS, MAIN_ACTIONS


def _key(key: str) -> str:
    names = {"slash": "/", "question_mark": "?", "escape": "esc", "space": "space",
             "enter": "enter"}
    return ", ".join(names.get(k.strip(), k.strip()) for k in key.split(","))


def sections(keymap: dict[str, str] | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """(section, [(keys, what they do)]) for every binding, with `keymap` (binding id ->
    keys) applied."""
    from tui.panes.inspector import ParamTable
    from tui.screens.runs import RunsScreen

    keymap = keymap or {}

    def rows(bindings: Iterable[tuple[str, str, str]]) -> list[tuple[str, str]]:
        return [(_key(keymap.get(bid, key)), text) for bid, key, text in bindings]

    main = rows((a.id, a.key, a.title or a.label) for a in (*MAIN_ACTIONS, *APP_ACTIONS))
    main.append(("ctrl+p", "Command palette"))
    fields = [(_key(k), t) for k, t in FIELD_KEYS]
    runs = rows((b.id or "", b.key, b.description) for b in RunsScreen.BINDINGS)
    runs.append(("enter", "Open the highlighted run"))
    table = rows((b.id or "", b.key, b.description) for b in ParamTable.BINDINGS)
    return [("Main screen", main), ("In a form field", fields), ("Runs screen (R)", runs),
            ("Parameter inspector", table)]


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help-close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(self._text(), id="help-text")

    def on_mount(self) -> None:
        box = self.query_one("#help-box")
        box.border_title = "Keys"
        box.border_subtitle = "esc or ? closes"

    def _text(self) -> Table:
        keymap = dict(getattr(self.app, "_keymap", {}) or {})
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold cyan", no_wrap=True)
        grid.add_column()
        first = True
        for title, rows in sections(keymap):
            if not first:
                grid.add_row("", "")
            first = False
            grid.add_row(Text(title, style="bold underline"), "")
            for keys, what in rows:
                grid.add_row(keys, what)
        return grid

    def action_close(self) -> None:
        self.dismiss(None)
