"""The run plot: one of four views, switched with a key (c):

    loss       training loss per step (raw and smoothed) and validation loss per epoch
    accuracy   test accuracy per epoch (classification)
    lr         the learning rate per step
    grad norm  the total gradient norm per parameter snapshot

each with a marker where the learning rate was changed during the run.

`LossModel` holds the bounded series and the view toggles and draws a Text of any size;
`LossPlot` is the widget that shows it and redraws only when the data, toggles or size
changed. Redraw cost depends on the widget's size, not on the run's length.
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.markup import escape
from textual.widget import Widget

from tui.actions import key_label
from tui.plotting import Trace, render_plot
from tui.series import DecimatedSeries, RecentWindow, smooth

SMOOTHING = (0.0, 0.6, 0.9, 0.99)
VIEWS = ("loss", "accuracy", "lr", "grad norm")
MAX_MARKS = 64  # lr changes marked (the newest)


class LossModel:
    def __init__(self, capacity: int = 2048, window: int = 2000) -> None:
        self.train = DecimatedSeries(capacity)
        self.recent = RecentWindow(window)
        self.val = DecimatedSeries(512)
        self.acc = DecimatedSeries(512)
        self.lr = DecimatedSeries(512)
        self.grad = DecimatedSeries(512)
        self.lr_marks: list[int] = []  # steps where the lr was changed
        self.view = "loss"
        self.window = window
        self.log_y = False
        self.recent_only = False
        self.smoothing = 0.6
        self.version = 0  # bumps on every change that alters the picture

    def clear(self) -> None:
        self.train.clear()
        self.recent.clear()
        self.val.clear()
        self.acc.clear()
        self.lr.clear()
        self.grad.clear()
        self.lr_marks.clear()
        self.version += 1

    def add_losses(self, first_step: int, losses: tuple[float, ...]) -> None:
        self.train.extend(first_step, losses)
        self.recent.extend(first_step, losses)
        self.version += 1

    def load_history(self, history: Any) -> None:
        """Draw a run's summarised past (an engine History event): the loss buckets (min,
        max and mean of each), the newest raw steps for the recent view, the lr at its
        changes, the validation loss and accuracy per epoch."""
        self.train.load(history.steps, history.loss_min, history.loss_max, history.loss_mean,
                        history.per_point)
        self.recent.clear()
        if history.tail_steps:
            self.recent.extend(history.tail_steps[0], history.tail_losses)
        self.lr.clear()
        lr_points = list(zip(history.lr_steps, history.lr, strict=True))
        for i, (step, lr) in enumerate(lr_points):
            self.lr.append(step, lr)
            end = lr_points[i + 1][0] - 1 if i + 1 < len(lr_points) else history.last_step
            if end > step:  # the lr holds until the next change: a step line
                self.lr.append(end, lr)
        self.val.clear()
        self.acc.clear()
        accuracy = history.metrics.get("accuracy", ())
        for i, step in enumerate(history.epoch_steps):
            val = history.val_loss[i] if i < len(history.val_loss) else None
            if val is not None:
                self.val.append(step, val)
            if i < len(accuracy) and math.isfinite(accuracy[i]):
                self.acc.append(step, accuracy[i])
        self.version += 1

    def truncate(self, step: int) -> None:
        """Drop what came after `step`: a resumed run continues from there."""
        self.train.truncate(step)
        self.recent.truncate(step)
        self.val.truncate(step)
        self.acc.truncate(step)
        self.lr.truncate(step)
        self.grad.truncate(step)
        self.lr_marks = [m for m in self.lr_marks if m <= step]
        self.version += 1

    def add_val(self, step: int, val_loss: float) -> None:
        self.val.append(step, val_loss)
        self.version += 1

    def add_accuracy(self, step: int, accuracy: float) -> None:
        self.acc.append(step, accuracy)
        self.version += 1

    def add_lr(self, step: int, lr: float) -> None:
        self.lr.append(step, lr)
        self.version += 1

    def add_grad_norm(self, step: int, norm: float) -> None:
        self.grad.append(step, norm)
        self.version += 1

    def mark_lr_change(self, step: int) -> None:
        if not self.lr_marks or self.lr_marks[-1] != step:
            self.lr_marks = [*self.lr_marks, step][-MAX_MARKS:]
            self.version += 1

    def cycle_view(self) -> str:
        self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        self.version += 1
        return self.view

    def cycle_smoothing(self) -> float:
        i = SMOOTHING.index(self.smoothing) if self.smoothing in SMOOTHING else 0
        self.smoothing = SMOOTHING[(i + 1) % len(SMOOTHING)]
        self.version += 1
        return self.smoothing

    def describe(self, keymap: dict[str, str] | None = None) -> str:
        """The view and its settings, each with the key that changes it (the user's keymap
        applied: binding id -> keys)."""
        def key(action_id: str) -> str:
            return f"[{key_label(action_id, keymap)}]"

        scale = "log" if self.log_y else "lin"
        if self.view != "loss":
            return f"{key('plot-view')}{self.view.capitalize()} {key('toggle-log')}{scale}"
        view = f"last {self.window}" if self.recent_only else "all"
        return (f"{key('plot-view')}Loss {key('toggle-window')}{view} "
                f"{key('toggle-log')}{scale} {key('smoothing')}smooth {self.smoothing:g}")

    @property
    def shows_envelope(self) -> bool:
        """Whether the loss view draws the min/max envelope: where the whole-run series is
        decimated (more than one step per bucket), so that a spike a mean would hide shows."""
        return self.view == "loss" and not self.recent_only and self.train.width > 1

    def loss_traces(self, width: int) -> list[Trace]:
        """The loss view's traces for a plot `width` cells wide (envelope first)."""
        max_points = max(2 * width, 16)  # the hd marker has two sub-columns per cell
        source = self.recent if self.recent_only else self.train
        xs, ys = source.points(max_points)
        if not xs:
            return []
        traces = []
        if self.shows_envelope:
            ex, lo, hi = self.train.envelope(max_points)
            traces.append(Trace(ex, hi, "dim", label="max"))
            traces.append(Trace(ex, lo, "dim", label="min"))
        if self.smoothing > 0:
            traces.append(Trace(xs, ys, "grey"))
            traces.append(Trace(xs, smooth(ys, self.smoothing), "blue"))
        else:
            traces.append(Trace(xs, ys, "blue"))
        vx, vy = self.val.points(max_points)
        if vx:
            first = xs[0] if self.recent_only else float("-inf")
            pairs = [(x, y) for x, y in zip(vx, vy, strict=True) if x >= first]
            if pairs:
                traces.append(Trace([p[0] for p in pairs], [p[1] for p in pairs], "yellow"))
        return traces

    def render(self, width: int, height: int) -> Text:
        if self.view != "loss":
            return self._render_other(width, height, max(2 * width, 16))
        traces = self.loss_traces(width)
        if not traces:
            return Text("no losses yet: pick a preset and press s to start", style="dim")
        return render_plot(traces, width, height, log_y=self.log_y, markers=self.lr_marks)

    def _render_other(self, width: int, height: int, max_points: int) -> Text:
        series, color, empty = {
            "accuracy": (self.acc, "green", "no accuracy yet (classification runs, per epoch)"),
            "lr": (self.lr, "cyan", "no learning rate yet"),
            "grad norm": (self.grad, "magenta", "no gradient norms yet (parameter snapshots)"),
        }[self.view]
        xs, ys = series.points(max_points)
        if not xs:
            return Text(empty, style="dim")
        y_range = (0.0, 1.0) if self.view == "accuracy" and not self.log_y else None
        lines = self.view != "lr" or len(xs) > 1
        return render_plot([Trace(xs, ys, color, lines=lines)], width, height, log_y=self.log_y,
                           y_range=y_range, markers=self.lr_marks)


class LossPlot(Widget, can_focus=True):
    """Shows a LossModel; call `changed()` after feeding it. Focusable, so that it can be
    maximised (z)."""

    def __init__(self, model: LossModel | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model or LossModel()
        self._cache: tuple[tuple, Text] | None = None
        self.border_title = "Loss"
        self._set_titles()

    def changed(self) -> None:
        self._set_titles()
        self.refresh()

    def on_mount(self) -> None:
        self._set_titles()  # with the user's keymap, once there is an app

    def _set_titles(self) -> None:
        model = self.model
        try:
            keymap = dict(getattr(self.app, "_keymap", None) or {})
        except Exception:  # not mounted yet: the default keys
            keymap = {}
        title = escape(model.describe(keymap))
        if model.view == "loss":
            legend = "[$text-muted]━[/] raw  [$primary]━[/] smoothed" if model.smoothing else \
                "[$primary]━[/] train"
            if model.shows_envelope:
                legend = "[$text-muted]┄[/] min/max  " + legend
            if len(model.val):
                legend += "  [$warning]━[/] val"
        else:
            legend = ""
        if model.lr_marks:
            legend += "  [magenta]│[/] lr changed"
        legend = legend.strip()
        if self.border_title != title:
            self.border_title = title
        if self.border_subtitle != legend:
            self.border_subtitle = legend

    def render(self) -> Text:
        size = self.content_region.size
        key = (self.model.version, self.model.view, self.model.log_y, self.model.recent_only,
               self.model.smoothing, size.width, size.height)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.model.render(size.width, size.height))
        return self._cache[1]
