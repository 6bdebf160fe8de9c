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
COLORS = {"blue": 12, "green": 10, "red": 9, "cyan": 14, "magenta": 13, "yellow": 11, "grey": 8,
          "dim": 240}


@dataclass
class Trace:
    xs: list[float]
    ys: list[float]
    color: str = "blue"
    lines: bool = True
    label: str = ""
    extra: dict = field(default_factory=dict)


def nice_step(span: float, max_ticks: int) -> float:
    """A round tick spacing (1, 2, 2.5 or 5 times a power of ten) giving at most `max_ticks`
    ticks over `span`."""
    if not math.isfinite(span) or span <= 0:
        return 1.0
    raw = span / max(1, max_ticks)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def nice_ticks(lo: float, hi: float, max_ticks: int = 5, integer: bool = False) -> list[float]:
    """Round values between `lo` and `hi` (inclusive), at most `max_ticks` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    step = nice_step(hi - lo, max_ticks)
    if integer and step < 1:
        step = 1.0
    elif integer and step % 1:
        step *= 2  # 2.5 -> 5: whole numbers
    first = math.ceil(lo / step - 1e-9) * step
    out, i = [], 0
    while first + i * step <= hi + 1e-9 * step and i < 50:
        out.append(round(first + i * step, 12))
        i += 1
    return out


def count_label(value: float) -> str:
    """Steps and epochs: 0, 500, 1k, 2.5k, 20k, 1.5M."""
    v = abs(value)
    sign = "-" if value < 0 else ""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{sign}{v / div:.4g}{suffix}"
    return f"{value:.4g}"


def value_label(value: float, step: float) -> str:
    """A y (or fit x) tick: as many decimals as the spacing needs; exponents (1.5e-4, 1e6)
    when that would take more than 4 decimals or the value is huge."""
    if value == 0:
        return "0"
    step = step if step > 0 else abs(value)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if not math.isclose(round(step, decimals), step, rel_tol=1e-6):
        decimals += 1  # 2.5, 0.25
    if abs(value) >= 1e5 or decimals > 4:
        if _is_power_of_ten(abs(value)):
            return decade_label(value)
        digits = math.floor(math.log10(abs(value))) - math.floor(math.log10(step) + 1e-9)
        digits = max(0, min(4, digits + (decimals > -math.floor(math.log10(step) + 1e-9))))
        mantissa, _, exponent = f"{value:.{digits}e}".partition("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.{decimals}f}"


def axis_labels(values: list[float], step: float) -> list[str]:
    """The ticks of one axis written alike: when one needs an exponent, all share the
    largest one's (0, 0.5e5, 1.0e5, 1.5e5 rather than 0, 50000, 1e5, 1.50e5)."""
    labels = [value_label(v, step) for v in values]
    nonzero = [abs(v) for v in values if v]
    if not nonzero or not any("e" in label for label in labels):
        return labels
    e = math.floor(math.log10(max(nonzero)) + 1e-9)
    d = 0
    if step > 0:  # as many decimals as the mantissas' spacing needs (0.25: two)
        mantissa_step = step / 10 ** e
        d = max(0, -math.floor(math.log10(mantissa_step) + 1e-9))
        if not math.isclose(round(mantissa_step, d), mantissa_step, rel_tol=1e-6):
            d += 1
        d = min(4, d)
    return ["0" if v == 0 else f"{v / 10 ** e:.{d}f}e{e}" for v in values]


def _is_power_of_ten(v: float) -> bool:
    return v > 0 and math.isclose(10 ** round(math.log10(v)), v, rel_tol=1e-9)


def decade_label(value: float) -> str:
    """10**k written 1e-5, 0.01 as 1e-2, 1, 10, 100, 1e3."""
    k = round(math.log10(abs(value)))
    sign = "-" if value < 0 else ""
    if 0 <= k <= 2:
        return f"{sign}{10 ** k}"
    return f"{sign}1e{k}"


def log_ticks(lo: float, hi: float, max_ticks: int = 5) -> tuple[list[float], list[str]]:
    """Ticks for a log10 axis, given the range of log10(y): whole decades, written 1e-5;
    within less than a decade, round values of y itself."""
    first, last = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
    if last - first >= 1:
        stride = max(1, math.ceil((last - first + 1) / max_ticks))
        ks = list(range(first, last + 1, stride))
        return [float(k) for k in ks], [decade_label(10.0 ** k) for k in ks]
    ylo, yhi = 10 ** lo, 10 ** hi
    values = [v for v in nice_ticks(ylo, yhi, max_ticks) if v > 0]
    step = nice_step(yhi - ylo, max_ticks)
    return [math.log10(v) for v in values], [value_label(v, step) for v in values]


# how the x axis counts: steps (1k, 2.5k), epochs (whole numbers), plain values (fit view),
# or log10 values labelled as decades (the LR finder's lr)
X_KINDS = ("step", "epoch", "value", "log")


def render_plot(
    traces: list[Trace],
    width: int,
    height: int,
    log_y: bool = False,
    y_range: tuple[float, float] | None = None,
    x_kind: str = "step",
    markers: list[float] | tuple[float, ...] = (),
) -> Text:
    """A plot of `traces` exactly `width` x `height` cells (blank Text when too small), with
    round ticks; `log_y` plots log10(y) with decades as labels; `markers` are x positions
    marked by a vertical line (e.g. where the learning rate changed)."""
    if width < 20 or height < 6:
        return Text("(too small to plot)", style="dim")
    if log_y:
        traces = [_log(t) for t in traces]
    else:
        traces = [_finite(t) for t in traces]
    traces = [t for t in traces if t.xs]
    if not traces:
        return Text("no data yet", style="dim")
    xlo = min(min(t.xs) for t in traces)
    xhi = max(max(t.xs) for t in traces)
    if y_range is not None:
        ylo, yhi = y_range
        if log_y:
            ylo, yhi = math.log10(max(ylo, 1e-12)), math.log10(max(yhi, 1e-12))
    else:
        ylo = min(min(t.ys) for t in traces)
        yhi = max(max(t.ys) for t in traces)
    if xhi <= xlo:
        xlo, xhi = xlo - 1, xhi + 1
    if yhi <= ylo:
        pad = abs(ylo) * 0.05 or 0.5
        ylo, yhi = ylo - pad, yhi + pad
    y_ticks = max(3, min(6, height // 2))
    if y_range is None:  # out to the round values around the data, so the ends are labelled
        if log_y:
            if yhi - ylo >= 1:
                ylo, yhi = math.floor(ylo + 1e-9), math.ceil(yhi - 1e-9)
        else:
            step = nice_step(yhi - ylo, y_ticks)
            ylo = math.floor(ylo / step + 1e-9) * step
            yhi = math.ceil(yhi / step - 1e-9) * step
    plt = _plotext()
    fig = plt.figure
    fig.clear()
    fig.plot_size(width, height)
    fig.theme("default")
    fig.canvas("default")
    fig.legend(False)
    marks = [m for m in markers if xlo <= m <= xhi]
    for x in marks:
        pixel = plt.pixel(foreground=COLORS["magenta"])
        sig = fig.signal([x, x], [ylo, yhi], marker=plt.marker("hd", pixel))
        sig.lines()
        fig.draw(sig)
    for trace in traces:
        marker = plt.marker("hd", plt.pixel(foreground=COLORS.get(trace.color, 12)))
        sig = fig.signal(trace.xs, trace.ys, marker=marker)
        if trace.lines and len(trace.xs) > 1:
            sig.lines()
        fig.draw(sig)
    x_ticks = max(3, min(8, width // 10))
    xs = nice_ticks(xlo, xhi, x_ticks, integer=x_kind in ("step", "epoch"))
    if x_kind == "log":
        xs, x_labels = log_ticks(xlo, xhi, x_ticks)
    elif x_kind == "value":
        step = nice_step(xhi - xlo, x_ticks)
        x_labels = axis_labels(xs, step)
    else:
        x_labels = [count_label(x) for x in xs]
    if log_y:
        ys, y_labels = log_ticks(ylo, yhi, y_ticks)
    else:
        ys = nice_ticks(ylo, yhi, y_ticks)
        step = nice_step(yhi - ylo, y_ticks)
        y_labels = axis_labels(ys, step)
    fig.ruler(0).lim(xlo, xhi)
    fig.ruler(1).lim(ylo, yhi)
    if xs:
        fig.ruler(0).ticks(xs, x_labels)
    if ys:
        fig.ruler(1).ticks(ys, y_labels)
    return ansi_to_text(fig.build().string())


def render_lr_curve(lrs: list[float], losses: list[float], suggestion: float | None,
                    width: int, height: int) -> Text:
    """The LR finder's smoothed loss against lr on a log x axis (decades as labels), the
    suggested lr marked by a vertical line."""
    pairs = [(math.log10(x), y) for x, y in zip(lrs, losses, strict=False)
             if x > 0 and math.isfinite(y)]
    if not pairs:
        return Text("no losses yet", style="dim")
    trace = Trace([p[0] for p in pairs], [p[1] for p in pairs], "blue")
    marks = [math.log10(suggestion)] if suggestion and suggestion > 0 else []
    # y from the lowest loss to the highest before it: the explosion that ends the test
    # runs off the top instead of flattening the part that matters
    ys = trace.ys
    low = min(range(len(ys)), key=lambda i: ys[i])
    top = max(ys[: low + 1])
    y_range = (ys[low], top + 0.05 * (top - ys[low])) if top > ys[low] else None
    return render_plot([trace], width, height, x_kind="log", markers=marks, y_range=y_range)


def _plotext():
    import plotext

    # plotext clamps plots to the size of the terminal it thinks it is in; we size them ourselves
    plotext.terminal.limit(False, False)
    return plotext


def warm_up() -> None:
    """Import plotext ahead of the first plot (from a worker thread: it takes ~0.2 s)."""
    _plotext()


def _log(trace: Trace) -> Trace:
    pairs = [(x, math.log10(y)) for x, y in zip(trace.xs, trace.ys, strict=True)
             if y > 0 and math.isfinite(y)]
    return Trace([p[0] for p in pairs], [p[1] for p in pairs], trace.color, trace.lines)


def _finite(trace: Trace) -> Trace:
    if all(math.isfinite(y) for y in trace.ys):
        return trace
    pairs = [(x, y) for x, y in zip(trace.xs, trace.ys, strict=True) if math.isfinite(y)]
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
