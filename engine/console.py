"""The headless sink: plain lines, no carriage returns.

    run 2026...-digits-cnn: digits-cnn on cpu, 600 steps (20 epochs of 30), batch 64 -> runs/...
    step 412/600  epoch 14/20  loss 0.0421  1,234 steps/s  ETA 0:01
    epoch 14/20  step 420  train_loss 0.0512  val_loss 0.0731  accuracy 0.9722  lr 0.003  0:04
    finished after 600 steps
    result: val_loss 0.0702 (best 0.0688)  test_accuracy 0.9750  train_loss 0.0311  0:06

A line per epoch with its numbers (at most one every `every_s`: when epochs come faster,
the latest one; the last epoch always), and between epochs a step line every `every_s`
(progress only: it never repeats an earlier epoch's numbers).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from engine import events as ev
from engine.rate import RateMeter, clock


def fmt(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


class ConsolePrinter:
    """`printer(event)` for every event of a run. `write` replaces printing to `out` (a
    progress bar prints the lines above itself); `step_lines=False` leaves the progress
    between epochs to such a bar."""

    def __init__(
        self,
        out: TextIO | None = None,
        every_s: float = 2.0,
        step_lines: bool = True,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.out = out or sys.stdout
        self.every_s = every_s
        self.step_lines = step_lines
        self.write = write
        self._next_step = 0.0
        self._next_epoch = 0.0
        self.total_steps = 0
        self.total_epochs = 0
        self.step = 0
        self.lr: float | None = None
        self.elapsed_s: float | None = None
        self.last_epoch: ev.EpochEnd | None = None
        self.last_val: ev.EpochEnd | None = None  # the last epoch with an evaluation
        self._epoch_printed = True
        self.rate = RateMeter()  # pauses and the first steps' warm-up left out

    def line(self, text: str) -> None:
        if self.write is not None:
            self.write(text)
        else:
            print(text, file=self.out, flush=True)

    # --- the lines ------------------------------------------------------------------------
    def step_line(self, event: ev.StepMetrics) -> str:
        parts = [
            f"step {event.last_step}/{self.total_steps}",
            f"epoch {event.epoch}/{self.total_epochs}",
            f"loss {fmt(event.losses[-1], 4)}",
        ]
        if self.rate.empty:  # not fed the run's flushes (`show` of a live run): its figure
            rate = event.steps_per_s if event.steps_per_s > 0 else None
        else:  # from the second flush on: the first holds the warm-up
            rate = self.rate.steps_per_s
        if rate is not None:
            parts.append(f"{rate:,.0f} steps/s")
            if self.total_steps > event.last_step:
                eta = (self.total_steps - event.last_step) / rate
                parts.append(f"ETA {clock(eta)}")
        return "  ".join(parts)

    def epoch_line(self, event: ev.EpochEnd) -> str:
        parts = [
            f"epoch {event.epoch}/{self.total_epochs}",
            f"step {event.step}",
            f"train_loss {fmt(event.train_loss, 4)}",
        ]
        if event.val_loss is not None:
            parts.append(f"val_loss {fmt(event.val_loss, 4)}")
        for name, value in event.metrics.items():
            parts.append(f"{name} {fmt(value, 4)}")
        if self.lr is not None:
            parts.append(f"lr {self.lr:g}")
        parts.append(clock(self.elapsed_s))
        return "  ".join(parts)

    def result_line(self, summary: dict) -> str | None:
        """The headline numbers of an ended run, labelled."""
        parts = []
        if self.last_val is not None and self.last_val.val_loss is not None:
            best = summary.get("best_val_loss")
            extra = f" (best {fmt(best, 4)})" if isinstance(best, float) else ""
            parts.append(f"val_loss {fmt(self.last_val.val_loss, 4)}{extra}")
        elif isinstance(summary.get("best_val_loss"), float):
            parts.append(f"best_val_loss {fmt(summary['best_val_loss'], 4)}")
        if isinstance(summary.get("test_accuracy"), float):
            parts.append(f"test_accuracy {summary['test_accuracy']:.4f}")
        if isinstance(summary.get("epoch_loss"), float):
            parts.append(f"train_loss {fmt(summary['epoch_loss'], 4)}")
        elif isinstance(summary.get("final_loss"), float):
            parts.append(f"train_loss {fmt(summary['final_loss'], 4)}")
        if isinstance(summary.get("duration_s"), (int, float)):
            parts.append(clock(summary["duration_s"]))
        return "result: " + "  ".join(parts) if parts else None

    # --- events ---------------------------------------------------------------------------
    def _flush_epoch(self) -> None:
        """The latest epoch's line, if it was held back by the rate limit."""
        if not self._epoch_printed and self.last_epoch is not None:
            self._epoch_printed = True
            self.line(self.epoch_line(self.last_epoch))

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            self.total_steps, self.total_epochs = event.total_steps, event.total_epochs
            self.step, self.lr = event.start_step, event.lr
            self.rate.reset()
            self.line(
                f"run {event.run_id}: {event.preset} on {event.device}, "
                f"{event.total_steps} steps ({event.total_epochs} epochs of "
                f"{event.steps_per_epoch}), batch {event.batch_size} -> {event.run_dir}"
            )
            if event.data.startswith("data:"):  # the user's own data: resident or streaming
                self.line(event.data)
            if recipe_line(event.config, event.batch_size):
                self.line(recipe_line(event.config, event.batch_size))
            if event.start_step:
                self.line(f"resuming at step {event.start_step} (epoch {event.start_epoch + 1})")
        elif isinstance(event, ev.EpochEnd):
            self.last_epoch = event
            self._epoch_printed = False
            if event.val_loss is not None:
                self.last_val = event
            now = time.monotonic()
            if now >= self._next_epoch or event.epoch >= self.total_epochs:
                self._next_epoch = now + self.every_s
                self._next_step = now + self.every_s  # this line says where the run is
                self._flush_epoch()
        elif isinstance(event, ev.StepMetrics):
            self.step, self.lr, self.elapsed_s = event.last_step, event.lr, event.elapsed_s
            self.rate.add(event.elapsed_s, event.last_step)
            now = time.monotonic()
            if self.step_lines and (now >= self._next_step or event.last_step >= self.total_steps):
                self._next_step = now + self.every_s
                self.line(self.step_line(event))
        elif isinstance(event, ev.HparamChanged):
            self.lr = event.new
            self.line(f"step {event.step}: {event.key} {event.old:g} -> {event.new:g}")
        elif isinstance(event, ev.Paused):
            self._flush_epoch()
            self.line(f"paused at step {event.step}")
        elif isinstance(event, ev.Resumed):
            self.line(f"resumed at step {event.step}")
        elif isinstance(event, ev.RunWarning):
            self.line(f"WARNING: {event.message}")
        elif isinstance(event, ev.Finished):
            self._flush_epoch()
            summary = event.summary
            if event.status == "diverged" and isinstance(summary.get("diverged_step"), int):
                epoch = summary.get("diverged_epoch")  # one truth: the run record's counters
                where = f", epoch {epoch}/{self.total_epochs}" if isinstance(epoch, int) else ""
                self.line(f"diverged at step {summary['diverged_step']}{where}")
            else:
                self.line(f"{event.status} after {event.step} steps")
            if summary.get("stopped_early"):
                self.line(f"{summary['stopped_early']}; the model is best.pt's")
            self._summary(event.summary)
        elif isinstance(event, ev.Failed):
            self._flush_epoch()
            self.line(f"failed at step {event.step}: {event.reason}")
            self._summary(event.summary, details=False)
        elif isinstance(event, ev.ProcessGone):
            self._flush_epoch()
            self.line(f"gone at step {event.step}: {event.reason}")

    def _summary(self, summary: dict, details: bool = True) -> None:
        result = self.result_line(summary)
        if result:
            self.line(result)
        if not details:
            return
        for key, value in summary.items():
            if key == "report":
                for name, v in value.items():
                    self.line(f"  {name} = {v}")
            elif key not in ("warning", "reason", "stopped_early"):
                self.line(f"  {key} = {fmt(value) if isinstance(value, float) else value}")


def recipe_line(config: dict, batch: int) -> str:
    """'recipe: ...' for a run that uses any recipe key (schedule, accumulation, clipping,
    precision, compile, channels-last, early stopping), or ''."""
    if not isinstance(config, dict):
        return ""
    train, parts = config.get("train", {}), []
    schedule = config.get("schedule")
    if isinstance(schedule, dict) and (schedule.get("name") != "constant"
                                       or schedule.get("warmup_steps")):  # fmt: skip
        warm = schedule.get("warmup_steps")
        parts.append(f"schedule {schedule.get('name')}" + (f" (warm-up {warm})" if warm else ""))
    k = train.get("accumulate", 1)
    if isinstance(k, int) and k > 1:
        parts.append(f"accumulate {k}: effective batch {batch * k}")
    if train.get("clip_grad_norm"):
        parts.append(f"clip_grad_norm {train['clip_grad_norm']:g}")
    if train.get("precision", "fp32") != "fp32":
        parts.append(str(train["precision"]))
    if train.get("compile"):
        parts.append("compiled")
    if train.get("channels_last"):
        parts.append("channels_last")
    early = config.get("early_stop")
    if isinstance(early, dict):
        parts.append(f"early stop on {early.get('metric')} (patience {early.get('patience')})")
    return "recipe: " + ", ".join(parts) if parts else ""
