"""The status line: state, progress, speed, ETA, device (and its memory on CUDA), checkpoint age."""

from __future__ import annotations

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


def status_text(run: RunState, now: float, message: str = "") -> Text:
    """One line (it may wrap on narrow terminals); `now` is the app's clock."""
    text = Text(no_wrap=False)
    text.append(f" {run.state.upper()} ", style=f"reverse {STATE_STYLES.get(run.state, '')}")
    parts: list[str] = []
    if run.preset:
        parts.append(run.preset)
    if run.total_steps:
        if run.total_epochs:
            parts.append(f"epoch {min(run.epoch, run.total_epochs)}/{run.total_epochs}")
        pct = 100 * run.step / run.total_steps
        parts.append(f"step {run.step:,}/{run.total_steps:,} ({pct:.0f}%)")
    if run.steps_per_s:
        parts.append(f"{rate(run.steps_per_s)} steps/s {rate(run.samples_per_s)} samples/s")
    if run.eta_s is not None:
        parts.append(f"ETA {duration(run.eta_s)}")
    if run.device:
        parts.append(run.device + (f" {run.device_memory}" if run.device_memory else ""))
    if run.last_checkpoint_t is not None and run.active:
        parts.append(f"ckpt {duration(max(0.0, now - run.last_checkpoint_t))} ago")
    if run.lr:
        parts.append(f"lr {run.lr:.3g}")
    text.append(" " + " │ ".join(parts))
    if run.state in ("failed", "diverged", "killed") and run.reason:
        text.append(f" │ {run.reason}", style="red")
    elif message:
        text.append(f" │ {message}", style="yellow")
    return text


class StatusLine(Static):
    """Fixed height (see app.tcss), so an update never needs a layout pass."""

    _shown: Text | None = None

    def show_run(self, run: RunState, now: float, message: str = "") -> None:
        text = status_text(run, now, message)
        shown = self._shown
        if shown is None or text.plain != shown.plain or text.spans != shown.spans:
            self._shown = text
            self.update(text, layout=False)

