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
from pathlib import Path
from typing import Any

from engine.errors import RunDirError, TorchdeckError

LOG_FILE = "worker.log"


def watch_control_file(run_dir: Path, control: Any, stop: threading.Event) -> threading.Thread:
    """A thread that feeds commands appended to control.jsonl into a trainer's Control."""
    from engine.handle import CONTROL_FILE
    from engine.rundir import LineTail

    tail = LineTail.at_end(Path(run_dir) / CONTROL_FILE)

    def loop() -> None:
        while not stop.wait(0.2):
            for item in tail.read_new():
                if isinstance(item.get("command"), str):
                    control.send(item["command"], item.get("value"))

    thread = threading.Thread(target=loop, name="torchdeck-control", daemon=True)
    thread.start()
    return thread


def handshake(reply: dict[str, Any], log_dir: Path | None = None) -> None:
    """Tell the parent (`spawn`) how the start went, in one JSON line; after a good start,
    stdout and stderr go to the run's worker.log and stdin comes from /dev/null. A parent
    that is gone already (its terminal closed while the run was being prepared) does not
    stop the run: the reply is dropped and training goes on."""
    try:
        print(json.dumps(reply), flush=True)
    except OSError:  # BrokenPipeError: nobody is reading the reply any more
        pass
    if log_dir is None:
        return
    log = os.open(log_dir / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)


def worker_main() -> int:
    from engine.jobs import job_from_dict, prepare

    request = json.loads(sys.stdin.read())
    try:
        trainer = prepare(job_from_dict(request["job"]))
    except TorchdeckError as err:
        handshake({"ok": False, "error": str(err)})
        return 2
    run_dir = trainer.p.run.path
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: trainer.control.stop())
    stop = threading.Event()
    # watching before the parent hears of the run: a command sent right away is not missed
    watch_control_file(run_dir, trainer.control, stop)
    handshake({"ok": True, "run_dir": str(run_dir), "run_id": trainer.p.run.id}, run_dir)
    if trainer.notice:
        print(f"torchdeck: {trainer.notice}", flush=True)  # to worker.log
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


def spawn(request: dict[str, Any], module: str = "engine.procs.worker") -> dict[str, Any]:
    """Start a worker in a new session, hand it `request` ({"job": ...}, plus "nproc" and
    "dist_args" for engine.procs.launch) and wait until its run is prepared; returns its
    reply."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(json.dumps(request).encode())
    proc.stdin.close()
    first = proc.stdout.readline()
    err = b"" if first.strip() else proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    reply = _parse_reply(first, err)
    reply["pid"] = proc.pid
    return reply


if __name__ == "__main__":
    raise SystemExit(worker_main())
