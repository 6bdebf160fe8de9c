"""The presets pane: every preset found (built-in, user, --presets DIR), broken ones marked."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


class PresetsPane(Vertical):
    """A list of presets and, below it, the highlighted one's title and description."""

    class Selected(Message):
        def __init__(self, info: Any) -> None:
            super().__init__()
            self.info = info

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.presets: list[Any] = []
        self.border_title = "Presets"
        self._quiet: str | None = None  # a preset highlighted only to be shown

    def compose(self) -> ComposeResult:
        yield OptionList(id="preset-list")
        with VerticalScroll(id="preset-detail-box"):
            yield Static(id="preset-detail")

    def set_presets(self, presets: list[Any], select: str | None = None) -> None:
        self.presets = list(presets)
        options = []
        for info in self.presets:
            label = Text(no_wrap=True, overflow="ellipsis")
            if info.error:
                label.append("✗ ", style="bold red")
                label.append(info.name, style="red")
                label.append("  error", style="dim red")
            else:
                label.append(info.name, style="bold")
                label.append(f"  {info.task}", style="dim")
                if not info.builtin:
                    label.append("  (yours)", style="dim italic")
            options.append(Option(label, id=info.name))
        olist = self.query_one(OptionList)
        olist.clear_options()
        olist.add_options(options)
        names = [p.name for p in self.presets]
        if select in names:
            olist.highlighted = names.index(select)
        elif names:
            olist.highlighted = 0
        if self.current is not None:
            # now rather than when the highlight message comes, so that the first layout
            # sizes the detail box for it
            self.query_one("#preset-detail", Static).update(_detail(self.current))
        # once laid out: the selected preset in view, however short the list is
        self.call_after_refresh(olist.scroll_to_highlight)

    @property
    def current(self) -> Any:
        index = self.query_one(OptionList).highlighted
        if index is None or not (0 <= index < len(self.presets)):
            return None
        return self.presets[index]

    def select(self, name: str, quiet: bool = False) -> bool:
        """Highlight preset `name`; `quiet`: only show it (the form is not reloaded: it holds
        a run started from that preset)."""
        names = [p.name for p in self.presets]
        if name not in names:
            return False
        options, index = self.query_one(OptionList), names.index(name)
        if options.highlighted != index:  # otherwise no highlight event comes
            self._quiet = name if quiet else None
            options.highlighted = index
        return True

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        info = self.current
        if info is None:
            return
        self.query_one("#preset-detail", Static).update(_detail(info))
        quiet, self._quiet = self._quiet == info.name, None
        if not quiet:
            self.post_message(self.Selected(info))


def _detail(info: Any) -> Text:
    text = Text()
    if info.error:
        text.append(f"{info.name}: cannot be used\n", style="bold red")
        text.append(info.error, style="red")
        return text
    text.append(info.title, style="bold")
    text.append(f"\n{info.task}", style="italic")
    text.append(f" · {info.path.name}" if not info.builtin else " · built-in", style="dim")
    if info.description:
        text.append("\n" + " ".join(info.description.split()))
    return text
