"""The status line: state, progress, speed, ETA, device (and its memory on CUDA), checkpoint age."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from tui.run_state import RunState

STATE_STYLES = {
    "idle": "dim",
    "starting": "bold yellow",
    "running": "bold green",
    "paused": "bold yellow",
    "stopping": "bold yellow",
    "finished": "bold cyan",
    "stopped": "bold cyan",
    "diverged": "bold red",
    "failed": "bold red",
    "killed": "bold red",
}


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.3g}" if value < 10 else f"{value:.0f}"


def metric(value: float | None) -> str:
    if value is None:
        return "–"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        mantissa, _, exponent = f"{value:.2e}".partition("e")
        return f"{mantissa}e{int(exponent)}"
    text = f"{value:.4g}"
    return f"{value:.0f}" if "e" in text else text  # 12345, not 1.234e+04


def headline(run: RunState, short: bool = False) -> list[str]:
    """The numbers a user looks for: val loss and accuracy, last and (unless `short`) best."""
    out = []
    if run.val_loss is not None or run.best_val_loss is not None:
        best = run.best_val_loss
        text = f"val {metric(run.val_loss if run.val_loss is not None else best)}"
        if not short and best is not None and run.val_loss is not None and best != run.val_loss:
            text += f" (best {metric(best)})"
        out.append(text)
    if run.accuracy is not None:
        best = run.best_accuracy
        text = f"acc {run.accuracy:.2%}"
        if not short and best is not None and best != run.accuracy:
            text += f" (best {best:.2%})"
        out.append(text)
    return out


def status_text(run: RunState, now: float, message: str = "", width: int = 0) -> Text:
    """One line; with `width`, the least important parts are left out until it fits (the
    state, progress and headline numbers stay, their best values go first). `now` is the
    app's clock."""
    # [priority: lower is kept longer, text, style, shorter text]
    parts: list[list[Any]] = []
    if run.preset:
        parts.append([5, run.preset, "bold", ""])
    if run.total_steps:
        if run.total_epochs:
            parts.append([3, f"ep {min(run.epoch, run.total_epochs)}/{run.total_epochs}", "",
                          ""])
        pct = 100 * run.step / run.total_steps
        parts.append([1, f"step {run.step:,}/{run.total_steps:,} {pct:.0f}%", "", ""])
    for text, short in zip(headline(run), headline(run, short=True), strict=True):
        parts.append([2, text, "bold", short if short != text else ""])
    if run.steps_per_s and run.active:
        parts.append([4.5, f"{rate(run.steps_per_s)} it/s", "", ""])  # ETA outlives it
        parts.append([9, f"{rate(run.samples_per_s)} samples/s", "", ""])
    if run.eta_s is not None:
        parts.append([4, f"ETA {duration(run.eta_s)}", "", ""])
    if run.lr:
        parts.append([6, f"lr {run.lr:.3g}", "", ""])
    if run.device:
        parts.append([7, run.device, "", ""])
        if run.device_memory:
            parts.append([10, run.device_memory, "", ""])
    if run.last_checkpoint_t is not None and run.active:
        parts.append([8, f"ckpt {duration(max(0.0, now - run.last_checkpoint_t))} ago", "",
                      ""])
    if run.state in ("failed", "diverged", "killed") and run.reason:
        parts.append([0, run.reason, "red", ""])
    elif message:
        parts.append([0, message, "yellow", ""])
    badge = f" {run.state.upper()} "

    def length() -> int:
        return len(badge) + sum(len(p[1]) + 3 for p in parts)

    while width > 0 and length() > width and parts:
        worst = max(range(len(parts)), key=lambda i: (parts[i][0], i))
        shorter = [p for p in parts if p[3]]
        if parts[worst][0] <= 2 and shorter:
            shorter[-1][1], shorter[-1][3] = shorter[-1][3], ""
        elif parts[worst][0] == 0:
            break
        else:
            del parts[worst]
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append(badge, style=f"reverse {STATE_STYLES.get(run.state, '')}")
    for i, (_, part, style, _) in enumerate(parts):
        text.append(" │ " if i else "  ", style="dim" if i else "")
        text.append(part, style=style)
    return text


class StatusLine(Static):
    """Fixed height (see app.tcss), so an update never needs a layout pass; always one line,
    the least important parts left out on narrow terminals."""

    _shown: Text | None = None
    _args: tuple | None = None

    def show_run(self, run: RunState, now: float, message: str = "") -> None:
        self._args = (run, now, message)
        text = status_text(run, now, message, self.size.width)
        shown = self._shown
        if shown is None or text.plain != shown.plain or text.spans != shown.spans:
            self._shown = text
            self.update(text, layout=False)

    def on_resize(self) -> None:
        if self._args is not None:
            self.show_run(*self._args)
