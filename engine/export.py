"""`torchdeck export RUN --csv`: the step metrics of a run as CSV."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TextIO

from engine.rundir import RunDir


def step_rows(run: RunDir) -> list[tuple[int, int, float, float]]:
    """(step, epoch, loss, lr) for every logged step; a resumed run's re-logged steps replace
    the ones logged before its crash."""
    losses: list[float] = []
    lrs: list[float] = []
    epoch_ends: list[tuple[int, int]] = []
    for event in run.read_events():
        if event.type == "run_started":
            del losses[event.start_step :], lrs[event.start_step :]
            epoch_ends = [e for e in epoch_ends if e[1] <= event.start_step]
        elif event.type == "steps":
            del losses[event.first_step - 1 :], lrs[event.first_step - 1 :]
            losses.extend(event.losses)
            lrs.extend([event.lr] * len(event.losses))
        elif event.type == "epoch":
            epoch_ends.append((event.epoch, event.step))
    rows = []
    ends = iter(sorted(epoch_ends, key=lambda e: e[1]))
    current = next(ends, None)
    for i, (loss, lr) in enumerate(zip(losses, lrs, strict=True), start=1):
        while current is not None and current[1] < i:
            current = next(ends, None)
        epoch = current[0] if current is not None else (epoch_ends[-1][0] + 1 if epoch_ends else 1)
        rows.append((i, epoch, loss, lr))
    return rows


def write_csv(run: RunDir, out: TextIO | None = None) -> int:
    writer = csv.writer(out or sys.stdout, lineterminator="\n")
    writer.writerow(["step", "epoch", "loss", "lr"])
    rows = step_rows(run)
    for step, epoch, loss, lr in rows:
        writer.writerow([step, epoch, repr(loss), repr(lr)])
    return len(rows)


def export_csv(run: RunDir, path: str | None) -> int:
    if path is None or path == "-":
        return write_csv(run)
    with open(Path(path), "w", newline="") as fh:
        return write_csv(run, fh)
