"""The loss buffer: each step's loss stays on the device until a flush fetches them all at
once (one host sync), and the epochs that ended among them get their mean loss then.

    buf.pending.append(loss.detach())     # per step: a list append, nothing else
    buf.end_epoch(epoch, step)            # at an epoch end: no sync either
    flushed = buf.flush()                 # every few seconds: the one host sync
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class Diverged(Exception):
    """The loss or the weights became non-finite at `step`; `what` says which."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(what)
        self.step = step
        self.what = what


@dataclass
class Flushed:
    """What one flush fetched: the losses of steps first_step.., the epochs that ended among
    them as (epoch, last step, mean loss), and a divergence found among them (the losses
    stop before the non-finite one)."""

    first_step: int
    losses: list[float]
    epochs: list[tuple[int, int, float]] = field(default_factory=list)
    diverged: Diverged | None = None


class LossBuffer:
    """Per-step losses on the device, fetched in one transfer; epoch means; divergence.

    `reduce` combines the stacked losses before the fetch (the mean over processes of a
    distributed run), or is None."""

    def __init__(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.reduce = reduce
        self.pending: list[torch.Tensor] = []  # never replaced: the loop holds its append
        self.ended: list[tuple[int, int]] = []  # (epoch, last step) not yet flushed
        self.flushed_step = 0  # steps whose losses are fetched
        self.epoch_sum = 0.0  # the current epoch's fetched losses
        self.epoch_count = 0
        self.final_loss: float | None = None  # the last fetched loss
        self.last_epoch_loss: float | None = None  # the mean of the last closed epoch

    def end_epoch(self, epoch: int, step: int) -> None:
        """An epoch ended at `step`; its mean is known at the next flush."""
        self.ended.append((epoch, step))

    def flush(self) -> Flushed | None:
        """Fetch the pending losses (the host sync, once per interval); None if there are
        none. A non-finite loss ends the batch there and is reported as `diverged`."""
        if not self.pending:
            if not self.ended:
                return None
            # epochs that ended after the last fetch (the final flush fell on their last
            # step): close them now, or the final epoch's event is lost
            out = Flushed(self.flushed_step + 1, [])
            out.epochs = self._take([], out.first_step)
            return out
        stacked = torch.stack(self.pending)
        if self.reduce is not None:
            stacked = self.reduce(stacked)
        values = stacked.tolist()  # the host sync
        self.pending.clear()
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        diverged = None
        if bad is not None:
            diverged = Diverged(self.flushed_step + bad + 1, f"the loss became {values[bad]}")
            values = values[:bad]
            self.ended = [e for e in self.ended if e[1] <= self.flushed_step + bad]
        out = Flushed(self.flushed_step + 1, values, diverged=diverged)
        if values:
            out.epochs = self._take(values, out.first_step)
        return out

    def _take(self, values: list[float], first: int) -> list[tuple[int, int, float]]:
        """Count fetched losses into their epochs; close the epochs that ended among them."""
        self.flushed_step += len(values)
        if values:
            self.final_loss = values[-1]
        closed, pos = [], 0
        for epoch, end_step in self.ended:
            upto = max(end_step - first + 1, pos)
            self._add(values[pos:upto])
            pos = upto
            closed.append((epoch, end_step, self.close_epoch()))
        self.ended.clear()
        self._add(values[pos:])
        return closed

    def _add(self, values: list[float]) -> None:
        """Add losses to the epoch's sum one by one, in step order: the sum is the same
        whichever way the steps fell into fetches (sum(chunk) would group them)."""
        total = self.epoch_sum
        for v in values:
            total += v
        self.epoch_sum = total
        self.epoch_count += len(values)

    def close_epoch(self) -> float:
        """The mean loss of the epoch counted so far, which then starts afresh."""
        self.last_epoch_loss = self.epoch_sum / max(self.epoch_count, 1)
        self.epoch_sum, self.epoch_count = 0.0, 0
        return self.last_epoch_loss

    def discard(self) -> None:
        """Drop what is pending (after a divergence, or when the device failed)."""
        self.pending.clear()

    # --- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, float | int | None]:
        return {"epoch_loss_sum": self.epoch_sum, "epoch_loss_count": self.epoch_count}

    def restore(self, step: int, epoch_sum: float, epoch_count: int, progress: dict) -> None:
        self.flushed_step = step
        self.epoch_sum, self.epoch_count = epoch_sum, epoch_count
        self.last_epoch_loss = progress.get("last_epoch_loss")
        self.final_loss = progress.get("final_loss")
