"""Runs that outlive the terminal: a training process in its own session.

The parent (`torchdeck train --detach`, or the app) starts `python -m engine.procs.worker`, writes
a job as JSON to its stdin and reads one JSON line back: {"ok": true, "run_dir": ...} once
the run is prepared, or {"ok": false, "error": ...} if it cannot start. From then on the
worker writes only to its run directory (stdout and stderr go to worker.log), takes
commands from control.jsonl, and stops gracefully on SIGTERM. It is in a new session, so
closing the terminal (SIGHUP) does not reach it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engine.errors import RunDirError, TorchdeckError

CONTROL_FILE = "control.jsonl"
LOG_FILE = "worker.log"


def send_command(run_dir: Path, command: str, value: Any = None) -> None:
    """Queue a command for the process training the run (it reads it within ~0.2 s)."""
    line = json.dumps({"command": command, "value": value, "t": time.time()}) + "\n"
    fd = os.open(Path(run_dir) / CONTROL_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def watch_control_file(run_dir: Path, control: Any, stop: threading.Event) -> threading.Thread:
    """A thread that feeds new lines of control.jsonl into a trainer's Control."""
    path = Path(run_dir) / CONTROL_FILE
    offset = path.stat().st_size if path.exists() else 0

    def loop() -> None:
        nonlocal offset
        pending = b""
        while not stop.wait(0.2):
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                continue
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                try:
                    item = json.loads(line)
                    control.send(item["command"], item.get("value"))
                except (ValueError, KeyError, TypeError):
                    continue

    thread = threading.Thread(target=loop, name="torchdeck-control", daemon=True)
    thread.start()
    return thread


def handshake(reply: dict[str, Any], log_dir: Path | None = None) -> None:
    """Tell the parent (`spawn`) how the start went, in one JSON line; after a good start,
    stdout and stderr go to the run's worker.log and stdin comes from /dev/null."""
    print(json.dumps(reply), flush=True)
    if log_dir is None:
        return
    log = os.open(log_dir / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)


def prepare_job(job: dict[str, Any]):
    """The trainer for a job: train a config, resume a run, or replay a run."""
    from engine.build import prepare_run
    from engine.control import Control
    from engine.resume import prepare_replay, prepare_resume, resumed_trainer
    from engine.train.loop import Trainer

    control = Control()
    action = job["action"]
    if action == "train":
        prep = prepare_run(
            job["config"], job.get("runs_dir"), job.get("device_option", "[train] device")
        )
        return Trainer(prep, control=control)
    if action == "resume":
        prep, ckpt, new_lr = prepare_resume(
            job["ref"], job.get("runs_dir"), job.get("overrides", []), job.get("source", "auto")
        )
        return resumed_trainer(prep, ckpt, new_lr, control=control)
    if action == "replay":
        prep, changes = prepare_replay(job["ref"], job.get("runs_dir"), job.get("overrides", []))
        return Trainer(prep, control=control, scheduled=changes)
    raise TorchdeckError(f"unknown job {action!r}")


def worker_main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        trainer = prepare_job(job)
    except TorchdeckError as err:
        handshake({"ok": False, "error": str(err)})
        return 2
    run_dir = trainer.p.run.path
    handshake({"ok": True, "run_dir": str(run_dir), "run_id": trainer.p.run.id}, run_dir)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: trainer.control.stop())
    stop = threading.Event()
    watch_control_file(run_dir, trainer.control, stop)
    result = trainer.run()
    stop.set()
    print(f"{result.type}: {result}", flush=True)
    return 0 if result.type == "finished" else 1


def _parse_reply(out: bytes, err: bytes) -> dict[str, Any]:
    line = out.decode(errors="replace").strip().splitlines()
    try:
        reply = json.loads(line[0]) if line else None
    except ValueError:
        reply = None
    if reply is None:
        tail = err.decode(errors="replace").strip().splitlines()
        raise RunDirError(
            f"the training process failed to start: {tail[-1] if tail else 'no output'}"
        )
    if not reply["ok"]:
        raise TorchdeckError(reply["error"])
    return reply


def spawn(job: dict[str, Any], module: str = "engine.procs.worker") -> dict[str, Any]:
    """Start a worker for `job` in a new session and wait until its run is prepared; returns
    its reply. `module` is engine.procs.launch for a distributed job."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(json.dumps(job).encode())
    proc.stdin.close()
    first = proc.stdout.readline()
    err = b"" if first.strip() else proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    reply = _parse_reply(first, err)
    reply["pid"] = proc.pid
    return reply


async def spawn_async(job: dict[str, Any]) -> dict[str, Any]:
    """`spawn` for asyncio programs (the app): waits in a thread, never on the event loop.

    (asyncio's own subprocess transport would outlive the loop for a detached worker.)"""
    import asyncio

    return await asyncio.to_thread(spawn, job)


if __name__ == "__main__":
    raise SystemExit(worker_main())
