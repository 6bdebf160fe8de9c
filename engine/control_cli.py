"""Control a live run without the app (over SSH):

    torchdeck pause RUN                 checkpoint, then wait (status paused)
    torchdeck unpause RUN               go on training (status running)
    torchdeck stop RUN                  checkpoint, status stopped (waits, with a deadline)
    torchdeck set RUN optim.lr=VALUE    change the learning rate (recorded with its step)

Each checks that the run is live (recorded running or paused, its process alive on this
host), queues the command in the run's control.jsonl (engine.handle.send_command), and
waits until run.toml shows it applied. A run that is not live is one line, exit 2; a
command not applied before --timeout is one line, exit 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, RunDirError
from engine.rundir import RunDir, RunRecord, find_run

ACTIONS = ("pause", "unpause", "stop", "set")
PROGRESS_EVERY_S = 5.0


class NotApplied(RunDirError):
    """The run did not show the command applied in time."""

    exit_code = 1


def live_record(run: RunDir, action: str) -> RunRecord:
    record = run.record(check_checkpoints=False)
    if record.live:
        return record
    if record.status is None:
        raise RunDirError(f"run {run.id}: {record.problem}: nothing to {action}")
    if record.status.live and record.elsewhere:
        host = record.info.get("host", "another host")
        raise RunDirError(f"run {run.id} trains on {host}: run `torchdeck {action}` there")
    if record.killed:
        raise RunDirError(
            f"run {run.id} is not live (killed: its process is gone): nothing to {action}; "
            f"`torchdeck resume {run.id}` continues it"
        )
    raise RunDirError(f"run {run.id} is not live ({record.effective}): nothing to {action}")


def parse_lr(assignment: str) -> float:
    from engine.presets import parse_set

    try:
        key, value = parse_set(assignment)
    except ConfigError:
        raise ConfigError(f"set {assignment!r}: expected optim.lr=VALUE") from None
    if key != "optim.lr":
        raise ConfigError(f"set {assignment}: only optim.lr can change while a run trains")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"set {assignment}: expected a number, e.g. optim.lr=3e-4")
    lr = float(value)
    if not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"set {assignment}: the learning rate must be a positive number")
    return lr


def wait_for(
    run: RunDir,
    done: Callable[[RunRecord], bool],
    what: str,
    timeout_s: float,
    progress: bool = False,
) -> RunRecord:
    """Poll the run's record until `done(record)`; raise NotApplied at the deadline or when
    the run's process is gone first."""
    start = time.monotonic()
    next_note = start + PROGRESS_EVERY_S
    while True:
        record = run.record(check_checkpoints=False)
        if done(record):
            return record
        if record.killed or (record.status is not None and not record.status.live):
            raise NotApplied(f"run {run.id} ended ({record.effective}) before {what}")
        now = time.monotonic()
        if now - start >= timeout_s:
            raise NotApplied(
                f"run {run.id}: no sign of {what} after {timeout_s:g} s (the command is queued; "
                f"look again with `torchdeck show {run.id}`)"
            )
        if progress and now >= next_note:
            next_note = now + PROGRESS_EVERY_S
            print(f"  still {record.effective} after {now - start:.0f} s ...", flush=True)
        time.sleep(0.1)


def cmd_control(
    action: str, ref: str, runs_dir: str | None, value: str | None = None, timeout_s: float = 60
) -> int:
    from engine.handle import send_command

    run = find_run(ref, Path(runs_dir) if runs_dir else None)
    lr = parse_lr(value or "") if action == "set" else None
    record = live_record(run, action)
    status = str(record.status)
    if action == "pause":
        if status == "paused":
            print(f"run {run.id} is already paused (`torchdeck unpause {run.id}` continues it)")
            return 0
        send_command(run.path, "pause")
        wait_for(run, lambda r: str(r.status) == "paused", "pausing", timeout_s)
        print(f"run {run.id} paused (checkpoint written); `torchdeck unpause {run.id}` continues")
        return 0
    if action == "unpause":
        if status != "paused":
            print(f"run {run.id} is not paused ({status})")
            return 0
        send_command(run.path, "resume")
        wait_for(run, lambda r: str(r.status) == "running", "continuing", timeout_s)
        print(f"run {run.id} is training again")
        return 0
    if action == "set":
        before = len(record.changes)
        send_command(run.path, "set_lr", lr)
        done = wait_for(run, lambda r: len(r.changes) > before, "the change", timeout_s)
        change: dict[str, Any] = done.changes[-1]
        print(
            f"run {run.id}: optim.lr {change.get('old', '?'):g} -> {change.get('new', lr):g} "
            f"at step {change.get('step', '?')} (recorded in run.toml)"
        )
        return 0
    # stop
    send_command(run.path, "stop")
    print(f"stopping run {run.id} (checkpoint, then status stopped) ...", flush=True)
    done = wait_for(
        run, lambda r: r.status is not None and not r.status.live, "stopping", timeout_s, True
    )
    steps = done.summary.get("steps", "?")
    if str(done.status) == "stopped":
        print(f"run {run.id} stopped at step {steps}; `torchdeck resume {run.id}` continues it")
        return 0
    print(f"run {run.id} ended: {done.effective} at step {steps}")
    return 0 if str(done.status) == "finished" else 1


def add_parsers(sub: Any, common: Callable[[Any], None]) -> None:
    """The four subcommands, for engine.cli's parser."""
    helps = {
        "pause": "pause a live run (checkpoint, then wait)",
        "unpause": "continue a paused run",
        "stop": "stop a live run (checkpoint, status stopped) and wait until it has",
        "set": "change a live run's learning rate: torchdeck set RUN optim.lr=VALUE",
    }
    for action in ACTIONS:
        p = sub.add_parser(action, help=helps[action])
        p.add_argument("run", help="run id, unique prefix of one, or path")
        if action == "set":
            p.add_argument("assignment", metavar="optim.lr=VALUE")
        p.add_argument(
            "--timeout",
            type=float,
            default=120.0 if action == "stop" else 60.0,
            metavar="SECONDS",
            help="how long to wait for the run to show it (default %(default)g)",
        )
        common(p)


def run(args: Any, runs_dir: str | None) -> int:
    return cmd_control(
        args.command, args.run, runs_dir, getattr(args, "assignment", None), args.timeout
    )
