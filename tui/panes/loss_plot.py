"""The loss plot: training loss per step (raw and smoothed) and validation loss per epoch.

`LossModel` holds the bounded series and the view toggles and draws a Text of any size;
`LossPlot` is the widget that shows it and redraws only when the data, toggles or size
changed. Redraw cost depends on the widget's size, not on the run's length.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.markup import escape
from textual.widget import Widget

from tui.plotting import Trace, render_plot
from tui.series import DecimatedSeries, RecentWindow, smooth

SMOOTHING = (0.0, 0.6, 0.9, 0.99)


class LossModel:
    def __init__(self, capacity: int = 2048, window: int = 2000) -> None:
        self.train = DecimatedSeries(capacity)
        self.recent = RecentWindow(window)
        self.val = DecimatedSeries(512)
        self.window = window
        self.log_y = False
        self.recent_only = False
        self.smoothing = 0.6
        self.version = 0  # bumps on every change that alters the picture

    def clear(self) -> None:
        self.train.clear()
        self.recent.clear()
        self.val.clear()
        self.version += 1

    def add_losses(self, first_step: int, losses: tuple[float, ...]) -> None:
        self.train.extend(first_step, losses)
        self.recent.extend(first_step, losses)
        self.version += 1

    def truncate(self, step: int) -> None:
        """Drop what came after `step`: a resumed run continues from there."""
        self.train.truncate(step)
        self.recent.truncate(step)
        self.val.truncate(step)
        self.version += 1

    def add_val(self, step: int, val_loss: float) -> None:
        self.val.append(step, val_loss)
        self.version += 1

    def cycle_smoothing(self) -> float:
        i = SMOOTHING.index(self.smoothing) if self.smoothing in SMOOTHING else 0
        self.smoothing = SMOOTHING[(i + 1) % len(SMOOTHING)]
        self.version += 1
        return self.smoothing

    def describe(self) -> str:
        """The view settings, each with the key that changes it."""
        view = f"last {self.window}" if self.recent_only else "all"
        scale = "log" if self.log_y else "linear"
        return f"[v]{view} [g]{scale} [m]smooth {self.smoothing:g}"

    def render(self, width: int, height: int) -> Text:
        max_points = max(2 * width, 16)  # the hd marker has two sub-columns per cell
        source = self.recent if self.recent_only else self.train
        xs, ys = source.points(max_points)
        if not xs:
            return Text("no losses yet: pick a preset and press s to start", style="dim")
        traces = []
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
        return render_plot(traces, width, height, log_y=self.log_y)


class LossPlot(Widget):
    """Shows a LossModel; call `changed()` after feeding it."""

    def __init__(self, model: LossModel | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model or LossModel()
        self._cache: tuple[tuple, Text] | None = None
        self.border_title = "Loss"
        self._set_titles()

    def changed(self) -> None:
        self._set_titles()
        self.refresh()

    def _set_titles(self) -> None:
        title = f"Loss {escape(self.model.describe())}"
        legend = "[$text-muted]━[/] raw  [$primary]━[/] smoothed" if self.model.smoothing else \
            "[$primary]━[/] train"
        if len(self.model.val):
            legend += "  [$warning]━[/] val/test"
        if self.border_title != title:
            self.border_title = title
        if self.border_subtitle != legend:
            self.border_subtitle = legend

    def render(self) -> Text:
        size = self.content_region.size
        key = (self.model.version, self.model.log_y, self.model.recent_only,
               self.model.smoothing, size.width, size.height)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.model.render(size.width, size.height))
        return self._cache[1]
