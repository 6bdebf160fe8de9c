"""Drawing line/scatter plots with plotext (6.x API) into a Rich Text for a widget.

plotext is imported on first use: the app's first frame must not wait for it. All drawing
happens on the event loop thread, so sharing plotext's one master figure is safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.color import Color
from rich.style import Style
from rich.text import Text

# plotext's 256-colour palette indices, picked to read on dark and light backgrounds
COLORS = {"blue": 12, "green": 10, "red": 9, "cyan": 14, "magenta": 13, "yellow": 11, "grey": 8}


@dataclass
class Trace:
    xs: list[float]
    ys: list[float]
    color: str = "blue"
    lines: bool = True
    label: str = ""
    extra: dict = field(default_factory=dict)


def render_plot(
    traces: list[Trace],
    width: int,
    height: int,
    log_y: bool = False,
    y_range: tuple[float, float] | None = None,
) -> Text:
    """A plot of `traces` exactly `width` x `height` cells (blank Text when too small)."""
    if width < 20 or height < 6:
        return Text("(too small to plot)", style="dim")
    if log_y:
        traces = [_positive(t) for t in traces]
    traces = [t for t in traces if t.xs]
    if not traces:
        return Text("no data yet", style="dim")
    plt = _plotext()
    fig = plt.figure
    fig.clear()
    fig.plot_size(width, height)
    fig.theme("default")
    fig.canvas("default")
    fig.legend(False)
    for trace in traces:
        marker = plt.marker("hd", plt.pixel(foreground=COLORS.get(trace.color, 12)))
        sig = fig.signal(trace.xs, trace.ys, marker=marker)
        if trace.lines and len(trace.xs) > 1:
            sig.lines()
        fig.draw(sig)
    if log_y:
        fig.ruler(1).scale("log")
    if y_range is not None:
        fig.ruler(1).lim(*y_range)
    return ansi_to_text(fig.build().string())


def _plotext():
    import plotext

    # plotext clamps plots to the size of the terminal it thinks it is in; we size them ourselves
    plotext.terminal.limit(False, False)
    return plotext


def warm_up() -> None:
    """Import plotext ahead of the first plot (from a worker thread: it takes ~0.2 s)."""
    _plotext()


def _positive(trace: Trace) -> Trace:
    pairs = [(x, y) for x, y in zip(trace.xs, trace.ys, strict=True) if y > 0 and math.isfinite(y)]
    return Trace([p[0] for p in pairs], [p[1] for p in pairs], trace.color, trace.lines)


def ansi_to_text(ansi: str) -> Text:
    """plotext's ANSI output without its backgrounds, and with black/white frames made neutral,
    so the plot sits on the widget's own background in any theme."""
    text = Text.from_ansi(ansi.rstrip("\n"), no_wrap=True, end="")
    neutral = {Color.from_ansi(0), Color.from_ansi(15), Color.from_ansi(7)}
    spans = text.spans
    for i, span in enumerate(spans):
        style = span.style
        if isinstance(style, Style):
            color = style.color if style.color not in neutral else None
            spans[i] = span._replace(style=Style(color=color, bold=style.bold))
    return text
