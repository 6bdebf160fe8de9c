"""The side view: the fit (data and current prediction) for 1-D regression presets, accuracy
per epoch for classification, and the mean training loss per epoch otherwise."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget

from tui.plotting import Trace, render_plot
from tui.series import DecimatedSeries

MAX_FIT_POINTS = 400


class FitView(Widget, can_focus=True):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_task = ""
        self.fit: Any = None
        self.per_epoch = DecimatedSeries(512)
        self.metric_name = ""
        self.version = 0
        self._cache: tuple[tuple, Text] | None = None
        self.border_title = "Fit / metrics"

    def clear(self, task: str = "") -> None:
        self.run_task = task
        self.fit = None
        self.per_epoch.clear()
        self.metric_name = ""
        self.version += 1
        self._touch()

    def add_epoch(self, event: Any) -> None:
        """Record an epoch; call `changed()` (the app paces it) to show it."""
        if "accuracy" in event.metrics:
            self.metric_name = "test accuracy"
            self.per_epoch.append(event.epoch, event.metrics["accuracy"])
        elif self.metric_name in ("", "epoch loss"):
            self.metric_name = "epoch loss"
            self.per_epoch.append(event.epoch, event.train_loss)
        if self.fit is None:  # otherwise the per-epoch series is not what is shown
            self.version += 1

    def set_fit(self, snapshot: Any) -> None:
        self.fit = snapshot
        self.version += 1

    def changed(self) -> None:
        self._touch()

    def _touch(self) -> None:
        if self.fit is not None:
            title = f"Fit at step {self.fit.step:,}"
            subtitle = "[$primary]•[/] data  [$success]━[/] model"
        elif self.metric_name:
            title, subtitle = f"{self.metric_name.capitalize()} per epoch", ""
        else:
            title, subtitle = "Fit / metrics", ""
        if self.border_title != title:
            self.border_title = title
        if self.border_subtitle != subtitle:
            self.border_subtitle = subtitle
        self.refresh()

    def render(self) -> Text:
        size = self.content_region.size
        key = (self.version, size.width, size.height)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._draw(size.width, size.height))
        return self._cache[1]

    def _draw(self, width: int, height: int) -> Text:
        if self.fit is not None:
            pts = sorted(zip(self.fit.x, self.fit.y, self.fit.y_pred, strict=True))
            step = max(1, len(pts) // MAX_FIT_POINTS)
            pts = pts[::step]
            xs = [p[0] for p in pts]
            data = Trace(xs, [p[1] for p in pts], "blue", lines=False)
            model = Trace(xs, [p[2] for p in pts], "green")
            return render_plot([data, model], width, height, x_kind="value")
        xs, ys = self.per_epoch.points(max(2 * width, 16))
        if xs:
            y_range = (0.0, 1.0) if self.metric_name == "test accuracy" else None
            return render_plot([Trace(xs, ys, "green")], width, height, y_range=y_range,
                               x_kind="epoch")
        return Text("the fit (1-D regression) or accuracy per epoch shows here", style="dim")
