"""Plain-text listings for the headless commands: presets, runs, show.

`runs` is newest first with labelled columns and, for live runs, the machine's figures
(engine.system); `show` adds the config, the live changes and, for a live run, where it is
and the machine's figures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from engine.errors import RunDirError
from engine.events import EpochEnd, Event, RunStarted, StepMetrics, event_from_json
from engine.presets import config_to_toml, discover_presets
from engine.rundir import EVENTS_FILE, EventTail, RunDir, RunRecord, find_run, list_runs


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def print_presets(preset_dirs: list[str]) -> int:
    rows, broken = [], []
    for info in discover_presets(preset_dirs):
        if info.error:
            rows.append([info.name, "BROKEN (see below)", "-", str(info.path)])
            broken.append(f"  {info.name}: {' '.join(info.error.split())}")
        else:
            rows.append([info.name, info.title, info.task, str(info.path)])
    print(table(rows, ["name", "title", "task", "file"]))
    if broken:
        print("\nbroken presets:")
        print("\n".join(broken))
    return 0


def _started(record: RunRecord) -> str:
    started = record.info.get("started")
    if isinstance(started, datetime):
        return started.strftime("%Y-%m-%d %H:%M:%S")
    return "-" if started is None else str(started)


def _acc(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else _short(value)


RUNS_HEADER = ["id", "status", "preset", "started", "steps", "final_loss", "best_val_loss",
               "test_acc"]  # fmt: skip


def run_row(run: RunDir, record: RunRecord | None = None) -> list[str]:
    record = record or run.record(check_checkpoints=False)
    summary = record.summary
    return [
        run.id,
        record.label,
        str(record.info.get("preset", "?")) if not record.damaged else "-",
        _started(record),
        _short(summary.get("steps")),
        _short(summary.get("final_loss")),
        _short(summary.get("best_val_loss")),
        _acc(summary.get("test_accuracy")),
    ]


def machine_lines(records: list[RunRecord]) -> list[str]:
    """'<id>: cpu 98% · rss 310 MiB · ram 9.8/23.4 GiB' for each live run (one short wait
    for all: the CPU figure needs two looks)."""
    import time

    from engine.system import describe, sample

    live = [r for r in records if r.live and r.pid is not None]
    if not live:
        return []
    for r in live:
        sample(r.pid, r.device)
    time.sleep(0.3)
    return [f"{r.id} ({r.device or '?'}): {describe(sample(r.pid, r.device))}" for r in live]


def print_runs(runs_dir: str | None) -> int:
    runs = list_runs(Path(runs_dir) if runs_dir else None)
    if not runs:
        print("no runs yet")
        return 0
    runs = sorted(runs, key=lambda r: r.id, reverse=True)  # newest first, as the app
    records = [r.record(check_checkpoints=False) for r in runs]
    print(table([run_row(r, rec) for r, rec in zip(runs, records, strict=True)], RUNS_HEADER))
    machine = machine_lines(records)
    if machine:
        print("\nlive:")
        for line in machine:
            print(f"  {line}")
    return 0


def _tail_events(run: RunDir, max_bytes: int = 256 * 1024) -> list[Event]:
    """The events of the log's last `max_bytes` (whole lines only)."""
    path = run.path / EVENTS_FILE
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - max_bytes))
            chunk = fh.read()
    except OSError:
        return []
    lines = chunk.split(b"\n")[1 if size > max_bytes else 0 : -1]
    events = []
    for line in lines:
        try:
            events.append(event_from_json(line.decode()))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
    return events


def progress_lines(run: RunDir) -> list[str]:
    """Where a live run is: its last logged step and its last epoch's numbers."""
    from engine.console import ConsolePrinter, clock

    events = _tail_events(run)
    started = next((e for e in reversed(events) if isinstance(e, RunStarted)), None)
    if started is None:
        head = EventTail(run.path / EVENTS_FILE)
        started = next((e for e in head.read_new() if isinstance(e, RunStarted)), None)
    steps = next((e for e in reversed(events) if isinstance(e, StepMetrics)), None)
    epoch = next((e for e in reversed(events) if isinstance(e, EpochEnd)), None)
    printer = ConsolePrinter(write=lambda _: None)
    if started is not None:
        printer(started)
    out = []
    if steps is not None:
        printer.lr, printer.elapsed_s = steps.lr, steps.elapsed_s
        out.append(f"progress: {printer.step_line(steps)}  trained {clock(steps.elapsed_s)}")
    if epoch is not None:
        out.append("last " + printer.epoch_line(epoch))
    return out


def print_show(ref: str, runs_dir: str | None) -> int:
    run = find_run(ref, Path(runs_dir) if runs_dir else None)
    record = run.record(check_checkpoints=False)
    if record.status is None:
        raise RunDirError(f"{run.path}: {record.problem} (not a run, or a damaged one)")
    info = record.info
    print(f"run {run.id}  ({run.path})")
    print(f"  status: {record.label}")
    for key in ("preset", "started", "ended", "device", "host", "replay_of"):
        if key in info:
            print(f"  {key}: {info[key]}")
    if record.live:
        for line in machine_lines([record]):
            print(f"  machine: {line.split(': ', 1)[1]}")
        for line in progress_lines(run):
            print(f"  {line}")
    print_ranks(run, record)
    summary = record.summary
    if summary:
        print("summary:")
        for key, value in summary.items():
            if isinstance(value, dict):
                for name, v in value.items():
                    print(f"  {key}.{name}: {_short(v)}")
            else:
                print(f"  {key}: {_short(value)}")
    changes = record.changes
    print(f"live changes: {len(changes) or 'none'}")
    for change in changes:
        print(
            f"  change at step {change.get('step', '?')}: {change.get('key', '?')} "
            f"{change.get('old', '?')} -> {change.get('new', '?')}"
        )
    if record.config:
        print("config (the resolved preset):")
        for line in config_to_toml(record.config).rstrip().splitlines():
            print(f"  {line}" if line else "")
    print_parameters(run)
    return 0


def print_ranks(run: RunDir, record: RunRecord) -> None:
    """A distributed run's rank table (engine/ranks.py), flags while it trains."""
    from engine.ranks import format_table, read_ranks

    view = read_ranks(run.path, live=record.live and record.status == "running")
    if view is None:
        return
    print(f"ranks ({view.world} processes):")
    for line in format_table(view):
        print(f"  {line}")


def print_parameters(run: RunDir) -> None:
    path = run.last_ckpt
    if not path.exists():
        print("parameters: no checkpoint yet")
        return
    import torch

    from engine.checkpoint import load_checkpoint, not_a_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except Exception as err:  # a damaged file must not crash `show`
        print(f"parameters: {path} is unreadable ({type(err).__name__}: {err})")
        return
    problem = not_a_checkpoint(ckpt)
    if problem:
        print(f"parameters: {path} is unreadable ({problem})")
        return
    state = ckpt["model"]
    print(f"parameters (from {path.name}, step {ckpt.get('step', '?')}):")
    with torch.no_grad():
        for name, t in state.items():
            shape = "x".join(str(s) for s in t.shape) or "scalar"
            if t.numel() <= 16:
                values = [float(v) for v in t.flatten().tolist()]
                shown = (
                    repr(values[0])
                    if t.dim() == 0
                    else "[" + ", ".join(repr(v) for v in values) + "]"
                )
                print(f"  {name} ({shape}, {str(t.dtype).removeprefix('torch.')}): {shown}")
            else:
                f = t.double()
                print(
                    f"  {name} ({shape}, {str(t.dtype).removeprefix('torch.')}): "
                    f"mean {f.mean():.6g} std {f.std(correction=0):.6g} "
                    f"min {f.min():.6g} max {f.max():.6g}"
                )
