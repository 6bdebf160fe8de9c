"""A progress bar for headless runs on a terminal (`torchdeck train` on a TTY).

A sink like engine.console.ConsolePrinter (`bar(event)`), outside the engine because it
uses rich: the bar shows step/total, epoch, loss, rate and ETA; every other line the plain
printer writes (epoch lines, warnings, the result) is printed above the bar.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from engine import events as ev
from engine.cli import plain_printer
from engine.rate import clock


class ProgressBar:
    """`ProgressBar()(event)` for each event of a run; `close()` ends the bar."""

    def __init__(self, out: TextIO | None = None, force_terminal: bool | None = None) -> None:
        self.console = Console(
            file=out or sys.stdout, highlight=False, force_terminal=force_terminal
        )
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(bar_width=None if self.console.width >= 120 else 16),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:<9}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=self.console,
            transient=False,
            refresh_per_second=4,
        )
        self.lines = plain_printer(write=self._write, step_lines=False, every_s=2.0)
        self.task: TaskID | None = None
        self.total_epochs = 0
        self.total_steps = 0

    def _write(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def __call__(self, event: Any) -> None:
        if isinstance(event, ev.RunStarted):
            self.lines(event)
            self.total_epochs = event.total_epochs
            self.total_steps = event.total_steps
            if self.task is None:
                self.progress.start()
                self.task = self.progress.add_task(
                    "train",
                    total=event.total_steps,
                    completed=event.start_step,
                    epoch=f"{event.start_epoch + 1}/{event.total_epochs}",
                    loss="-",
                    rate="",
                    eta="-:--",
                )
            return
        # the printer first: its meter takes this flush in (rate and ETA over the recent
        # training time, pauses and the first steps' warm-up left out)
        if isinstance(event, (ev.Finished, ev.Failed)):
            self.close()
        self.lines(event)
        if isinstance(event, ev.StepMetrics) and self.task is not None:
            meter = self.lines.rate
            rate, eta = meter.steps_per_s, meter.eta_s(self.total_steps, event.last_step)
            self.progress.update(
                self.task,
                completed=event.last_step,
                epoch=f"{event.epoch}/{self.total_epochs}",
                loss=f"{event.losses[-1]:.4g}",
                rate="" if rate is None else f"{rate:,.0f} steps/s",
                eta="-:--" if eta is None else clock(eta),
            )

    def close(self) -> None:
        """Leave the bar as it last was and give the terminal back (idempotent)."""
        if self.task is not None:
            self.progress.refresh()
            self.progress.stop()
            self.task = None
