"""The headless sink: plain lines, no carriage returns, one every few seconds."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from engine import events as ev


def fmt(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


class ConsolePrinter:
    def __init__(self, out: TextIO | None = None, every_s: float = 2.0) -> None:
        self.out = out or sys.stdout
        self.every_s = every_s
        self._next = 0.0
        self.total_steps = 0
        self.total_epochs = 0
        self.last_epoch: ev.EpochEnd | None = None

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            self.total_steps, self.total_epochs = event.total_steps, event.total_epochs
            self.line(
                f"run {event.run_id}: {event.preset} on {event.device}, "
                f"{event.total_steps} steps ({event.total_epochs} epochs of "
                f"{event.steps_per_epoch}), batch {event.batch_size} -> {event.run_dir}"
            )
            if event.start_step:
                self.line(f"resuming at step {event.start_step} (epoch {event.start_epoch + 1})")
        elif isinstance(event, ev.EpochEnd):
            self.last_epoch = event
        elif isinstance(event, ev.StepMetrics):
            now = time.monotonic()
            if now >= self._next or event.last_step >= self.total_steps:
                self._next = now + self.every_s
                parts = [
                    f"step {event.last_step}/{self.total_steps}",
                    f"epoch {event.epoch}/{self.total_epochs}",
                    f"loss {fmt(event.losses[-1])}",
                ]
                if self.last_epoch is not None:
                    parts.append(f"epoch_loss {fmt(self.last_epoch.train_loss)}")
                    for name, value in self.last_epoch.metrics.items():
                        parts.append(f"{name} {fmt(value, 4)}")
                parts.append(f"{event.steps_per_s:,.0f} steps/s")
                self.line("  ".join(parts))
        elif isinstance(event, ev.HparamChanged):
            self.line(f"step {event.step}: {event.key} {event.old:g} -> {event.new:g}")
        elif isinstance(event, ev.Paused):
            self.line(f"paused at step {event.step}")
        elif isinstance(event, ev.Resumed):
            self.line(f"resumed at step {event.step}")
        elif isinstance(event, ev.RunWarning):
            self.line(f"WARNING: {event.message}")
        elif isinstance(event, ev.Finished):
            self.line(f"{event.status} after {event.step} steps")
            for key, value in event.summary.items():
                if key == "report":
                    for name, v in value.items():
                        self.line(f"  {name} = {v}")
                elif key != "warning":
                    self.line(f"  {key} = {fmt(value) if isinstance(value, float) else value}")
        elif isinstance(event, ev.Failed):
            self.line(f"failed at step {event.step}: {event.reason}")
