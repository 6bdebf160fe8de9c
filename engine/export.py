"""`torchdeck export RUN --csv|--json [--epochs]`: a run's metrics, streamed.

    step rows   step, epoch, loss, lr                         (every logged training step)
    --epochs    epoch, step, train_loss, val_loss, <metrics: accuracy...>, lr, elapsed_s

lr is the rate the step used (a [schedule] moves it every step: the log holds each step's,
StepMetrics.lrs); an epoch's lr is its last step's; with clipping the epoch metrics hold
`clipped`, the fraction of its optimizer steps that were clipped.

CSV has a header line; JSON is JSON Lines: one object per line (null where a value is
missing or not finite), so a reader can stream it too.

The event log is read line by line, twice, and never held in memory: the first pass only
notes where a resumed run re-logged steps (a resume after a crash logs again the steps
after its checkpoint; those replace the ones logged before the crash) and which metric
names occur; the second writes the rows that survive.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from engine.events import EpochEnd, Event, RunStarted, StepMetrics, event_from_dict
from engine.rundir import EVENTS_FILE, RunDir


def _lines(path: Path, end: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every complete JSON line up to byte `end`; a torn last
    line or a bad line is skipped."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        pos = 0
        for n, raw in enumerate(fh):
            pos += len(raw)
            if end is not None and pos > end:
                return
            if not raw.endswith(b"\n") or not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                yield n, item


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _well_typed(event: Event) -> bool:
    """Whether the fields export reads have their types (a damaged line is skipped)."""
    if isinstance(event, RunStarted):
        return _int(event.start_step) and _int(event.steps_per_epoch) and _num(event.lr)
    if isinstance(event, StepMetrics):
        return (
            _int(event.first_step)
            and _int(event.epoch)
            and isinstance(event.losses, tuple)
            and all(_num(v) for v in event.losses)
            and _num(event.lr)
            and (event.elapsed_s is None or _num(event.elapsed_s))
        )
    if isinstance(event, EpochEnd):
        return (
            _int(event.epoch)
            and _int(event.step)
            and _num(event.train_loss)
            and (event.val_loss is None or _num(event.val_loss))
            and isinstance(event.metrics, dict)
        )
    if event.type == "hparam":
        return _num(getattr(event, "new", None))
    return True


def _events(path: Path, end: int | None = None) -> Iterator[tuple[int, Event]]:
    for n, item in _lines(path, end):
        try:
            event = event_from_dict(item)
        except (ValueError, KeyError, TypeError):
            continue
        if _well_typed(event):
            yield n, event


@dataclass
class _Cuts:
    """Where the log shrank the step record: (line, steps kept), with the minimum over all
    later cuts, so that the second pass can tell at once whether a row survives."""

    lines: list[int] = field(default_factory=list)
    later_min: list[int] = field(default_factory=list)
    _i: int = 0

    def add(self, line: int, keep: int) -> None:
        self.lines.append(line)
        self.later_min.append(keep)

    def close(self) -> None:
        for i in range(len(self.later_min) - 2, -1, -1):
            self.later_min[i] = min(self.later_min[i], self.later_min[i + 1])

    def limit(self, line: int) -> float:
        """The highest step of line `line` that no later cut removes."""
        while self._i < len(self.lines) and self.lines[self._i] <= line:
            self._i += 1
        return self.later_min[self._i] if self._i < len(self.lines) else math.inf


@dataclass
class _Plan:
    end: int  # bytes of the log seen by the first pass (a live run goes on writing)
    step_cuts: _Cuts
    epoch_cuts: _Cuts
    metrics: list[str]


def _plan(run: RunDir) -> _Plan:
    path = run.path / EVENTS_FILE
    try:
        end = path.stat().st_size
    except FileNotFoundError:
        end = 0
    step_cuts, epoch_cuts, metrics = _Cuts(), _Cuts(), {}
    length = 0
    for n, item in _lines(path, end):
        kind = item.get("type")
        if kind == "run_started":
            keep = item.get("start_step", 0)
            if not _int(keep):
                continue
            if keep < length:
                step_cuts.add(n, keep)
                epoch_cuts.add(n, keep)
            length = min(length, keep)
        elif kind == "steps":
            first, values = item.get("first_step", 1), item.get("losses", ())
            if not _int(first) or not isinstance(values, list):
                continue
            keep = first - 1
            if keep < length:
                step_cuts.add(n, keep)
            length = keep + len(values)
        elif kind == "epoch" and isinstance(item.get("metrics"), dict):
            metrics.update(dict.fromkeys(k for k in item["metrics"] if isinstance(k, str)))
    step_cuts.close()
    epoch_cuts.close()
    return _Plan(end, step_cuts, epoch_cuts, list(metrics))


def iter_step_rows(run: RunDir) -> Iterator[tuple[int, int, float, float]]:
    """(step, epoch, loss, lr) for every logged step, in order; a resumed run's re-logged
    steps replace the ones logged before its crash."""
    plan = _plan(run)
    spe = 0
    for n, event in _events(run.path / EVENTS_FILE, plan.end):
        if isinstance(event, RunStarted):
            spe = event.steps_per_epoch
        elif isinstance(event, StepMetrics):
            limit = plan.step_cuts.limit(n)
            for i, loss in enumerate(event.losses):
                step = event.first_step + i
                if step > limit:
                    break
                epoch = (step - 1) // spe + 1 if spe > 0 else event.epoch
                yield step, epoch, loss, event.lr_at(i)  # a [schedule]: each step's own


def step_rows(run: RunDir) -> list[tuple[int, int, float, float]]:
    """iter_step_rows as a list (for tests and small runs)."""
    return list(iter_step_rows(run))


def iter_epoch_rows(run: RunDir, plan: _Plan | None = None) -> Iterator[dict[str, Any]]:
    """One dict per epoch: epoch, step, train_loss, val_loss, <metrics>, lr, elapsed_s."""
    plan = plan or _plan(run)
    lr: float | None = None
    elapsed: float | None = None
    recent: list[StepMetrics] = []
    for n, event in _events(run.path / EVENTS_FILE, plan.end):
        if isinstance(event, RunStarted):
            lr = event.lr
        elif isinstance(event, StepMetrics):
            lr, elapsed = event.lr, event.elapsed_s
            recent = [*recent[-1:], event]  # an epoch's event may come a fetch later
        elif event.type == "hparam" and getattr(event, "key", "") == "optim.lr":
            lr = event.new  # type: ignore[attr-defined]
        elif isinstance(event, EpochEnd) and event.step <= plan.epoch_cuts.limit(n):
            for steps in recent:  # a schedule: the rate of the epoch's last step
                i = event.step - steps.first_step
                if steps.lrs and 0 <= i < len(steps.lrs):
                    lr = steps.lrs[i]
            row: dict[str, Any] = {
                "epoch": event.epoch,
                "step": event.step,
                "train_loss": event.train_loss,
                "val_loss": event.val_loss,
            }
            for name in plan.metrics:
                row[name] = event.metrics.get(name)
            row["lr"] = lr
            row["elapsed_s"] = round(elapsed, 3) if elapsed is not None else None
            yield row


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def write(run: RunDir, out: TextIO, fmt: str = "csv", epochs: bool = False) -> int:
    """Write the rows to `out`; returns how many."""
    if epochs:
        plan = _plan(run)
        header = ["epoch", "step", "train_loss", "val_loss", *plan.metrics, "lr", "elapsed_s"]
        rows: Iterator[dict[str, Any]] = iter_epoch_rows(run, plan)
    else:
        header = ["step", "epoch", "loss", "lr"]
        rows = (dict(zip(header, r, strict=True)) for r in iter_step_rows(run))
    n = 0
    if fmt == "json":
        for row in rows:
            out.write(json.dumps({k: _json_value(v) for k, v in row.items()}) + "\n")
            n += 1
        return n
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_value(row.get(k)) for k in header])
        n += 1
    return n


def export(run: RunDir, path: str | None, fmt: str = "csv", epochs: bool = False) -> int:
    if path is None or path == "-":
        return write(run, sys.stdout, fmt, epochs)
    with open(Path(path), "w", newline="") as fh:
        return write(run, fh, fmt, epochs)


def export_csv(run: RunDir, path: str | None) -> int:
    return export(run, path, "csv")


def cmd_export(ref: str, runs_dir: str | None, path: str | None, fmt: str, epochs: bool) -> int:
    from engine.errors import RunDirError
    from engine.rundir import find_run

    run = find_run(ref, Path(runs_dir) if runs_dir else None)
    record = run.record(check_checkpoints=False)
    if record.status is None:
        raise RunDirError(f"{run.path}: {record.problem} (not a run, or a damaged one)")
    n = export(run, path, fmt, epochs)
    if path and path != "-":
        print(f"{n} {'epochs' if epochs else 'steps'} -> {path}")
    return 0
