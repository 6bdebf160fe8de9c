"""The LR finder (`L` on the main screen): the learning-rate range test on the form's config,
its loss against lr (log x), the suggestion marked with the rule that chose it, and `u` to
put the suggestion into the form's lr field.

The test runs through the engine port (a child process: engine.lr_find) from a worker thread,
which posts typed messages; nothing is written and the model trained here is thrown away, so
the user's next run starts fresh. Leaving the screen cancels a test still running.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static

from tui.errors import user_message
from tui.plotting import render_lr_curve

STEPS = 200


class LrFindProgress(Message):
    """A step of the range test: its lr and smoothed loss."""

    def __init__(self, step: int, lr: float, loss: float) -> None:
        super().__init__()
        self.step, self.lr, self.loss = step, lr, loss


class LrFindDone(Message):
    """The test ended: `result` is an engine.lr_find.LRFindResult (plain lists and floats)."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


class LrFindFailed(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


def _lr(value: float) -> str:
    return f"{value:.3g}"


class LrCurve(Widget):
    """Loss against lr (log x); the suggestion as a vertical line."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.suggestion: float | None = None
        self.note = "starting…"
        self._cache: tuple[tuple, Text] | None = None

    def show(self, lrs: list[float], losses: list[float], suggestion: float | None) -> None:
        self.lrs, self.losses, self.suggestion = list(lrs), list(losses), suggestion
        self._cache = None
        self.refresh()

    def render(self) -> Text:
        size = self.content_region.size
        key = (len(self.lrs), self.suggestion, size.width, size.height, self.note)
        if self._cache is None or self._cache[0] != key:
            if len(self.lrs) < 2:
                text = Text(self.note, style="dim")
            else:
                text = render_lr_curve(self.lrs, self.losses, self.suggestion, size.width,
                                       size.height)
            self._cache = (key, text)
        return self._cache[1]


class LrFindScreen(Screen):
    """Dismissed with the lr to put into the form (`u`), or None (esc)."""

    DEFAULT_CSS = """
    #lrf-main { height: 1fr; }
    #lrf-title { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    #lrf-plot {
        height: 1fr; min-height: 8; border: round $primary 40%; padding: 0 1;
        border-title-color: $text; border-title-style: bold; border-subtitle-color: $text-muted;
    }
    #lrf-result { height: auto; max-height: 6; padding: 0 1; }
    """

    BINDINGS = [
        Binding("u", "use_lr", "Use this lr", id="lrf-use"),
        Binding("escape", "close", "Back", id="lrf-back"),
    ]

    def __init__(self, config: dict[str, Any], steps: int = STEPS) -> None:
        super().__init__()
        self.config = config
        self.steps = steps
        self.result: Any = None
        self.error = ""
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self._cancel = threading.Event()

    @property
    def form_lr(self) -> float:
        return float(self.config["optim"]["lr"])

    def compose(self) -> ComposeResult:
        with Vertical(id="lrf-main"):
            yield Static("", id="lrf-title")
            yield LrCurve(id="lrf-plot")
            yield Static("", id="lrf-result")
        yield Footer()

    def on_mount(self) -> None:
        name, optim = self.config["name"], self.config["optim"]["name"]
        self.query_one("#lrf-title", Static).update(Text.assemble(
            ("LR finder ", "bold"), (name, "bold"),
            (f"  {optim}, batch {self.config['train']['batch_size']}: a fresh copy of the "
             "model, nothing written; your next run starts fresh", "dim")))
        plot = self.query_one(LrCurve)
        plot.border_title = "Smoothed loss against lr (log scale)"
        plot.note = f"running the range test ({self.steps} steps, lr 1e-7 → 10)…"
        self._say(Text(f"running… form lr {_lr(self.form_lr)}", style="dim"))
        self.run_test()

    def on_unmount(self) -> None:
        self._cancel.set()  # a test still running: its child process is killed

    @work(thread=True, exit_on_error=False, group="lr-find")
    def run_test(self) -> None:
        def on_step(step: int, lr: float, loss: float) -> None:
            self.post_message(LrFindProgress(step, lr, loss))

        try:
            result = self.app.engine.lr_find(self.config, on_step, self._cancel.is_set,
                                             self.steps)
        except Exception as err:
            self.post_message(LrFindFailed(user_message(err)))
            return
        if result is not None:
            self.post_message(LrFindDone(result))

    # --- messages from the worker -------------------------------------------------------------
    def on_lr_find_progress(self, message: LrFindProgress) -> None:
        if self.result is not None:
            return
        self.lrs.append(message.lr)
        self.losses.append(message.loss)
        self.query_one(LrCurve).show(self.lrs, self.losses, None)
        self._say(Text(f"step {message.step}/{self.steps}: lr {_lr(message.lr)}, "
                       f"smoothed loss {message.loss:.4g}", style="dim"))

    def on_lr_find_done(self, message: LrFindDone) -> None:
        result = self.result = message.result
        plot = self.query_one(LrCurve)
        plot.note = "too few steps to draw"
        plot.show(result.lrs, result.losses, result.suggestion)
        why = "the loss exploded" if result.stopped == "diverged" else "lr reached the end"
        end = _lr(result.lrs[-1]) if result.lrs else "?"
        text = Text()
        if result.suggestion is None:
            text.append("no suggestion: too few steps before the loss exploded\n", "bold red")
        else:
            text.append("suggested lr ", "bold")
            text.append(_lr(result.suggestion), "bold magenta")
            text.append("  (the magenta line; u puts it into the form)\n")
        rule = result.rule.split(":", 1)
        text.append(f"rule: {rule[0]}", "bold")
        text.append(f":{rule[1]}\n" if len(rule) > 1 else "\n")
        low = f"; lowest loss at lr {_lr(result.min_loss_lr)}" if result.min_loss_lr else ""
        text.append(f"{len(result.lrs)} steps, lr 1e-07 .. {end}, stopped: {why}{low}; "
                    f"form lr {_lr(self.form_lr)}", "dim")
        self._say(text)
        plot.border_subtitle = f"│ suggested {_lr(result.suggestion)}" if result.suggestion \
            else ""
        self.refresh_bindings()

    def on_lr_find_failed(self, message: LrFindFailed) -> None:
        self.error = message.text
        self.query_one(LrCurve).note = "the range test failed"
        self.query_one(LrCurve).show([], [], None)
        self._say(Text(f"the LR finder failed: {message.text}", style="bold red"))
        self.app.notify(f"LR finder: {message.text}", severity="error", timeout=10)

    def _say(self, text: Text) -> None:
        self.query_one("#lrf-result", Static).update(text)

    # --- keys ---------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "use_lr":
            ok = self.result is not None and self.result.suggestion is not None
            return True if ok else None
        return True

    def action_use_lr(self) -> None:
        if self.result is None or self.result.suggestion is None:
            return
        value = float(_lr(self.result.suggestion))
        if not math.isfinite(value) or value <= 0:
            return
        self.dismiss(value)

    def action_close(self) -> None:
        self.dismiss(None)
