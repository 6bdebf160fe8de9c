"""A sweep that outlives the terminal: the sweep runner in a process of its own session.

The parent (`torchdeck sweep`, or the app) starts `python -m engine.procs.sweeper`, writes
{"sweep_dir": ..., "parallel": N} to its stdin and reads one JSON line back: {"ok": true}
once the runner has claimed the sweep, or {"ok": false, "error": ...}. From then on the
runner writes only to the sweep folder (stdout and stderr go to sweeper.log). SIGTERM stops
it gracefully: its running runs stop with a checkpoint and the next `torchdeck sweep resume`
continues them. It is in a new session, so closing the terminal (SIGHUP) does not reach it.
Each run it starts is a worker of its own (engine.procs.worker).
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

from engine.errors import TorchdeckError


def _log_line(item: dict[str, Any]) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} " + " ".join(f"{k}={v}" for k, v in item.items()), flush=True)


def sweeper_main() -> int:
    from engine.sweep import LOG_FILE, claim_runner, run_sweep

    request = json.loads(sys.stdin.read())
    path = Path(request["sweep_dir"])
    try:
        claim_runner(path)
    except TorchdeckError as err:
        print(json.dumps({"ok": False, "error": str(err)}), flush=True)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps({"ok": True, "pid": os.getpid()}), flush=True)
    log = os.open(path / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    _log_line({"event": "runner", "pid": os.getpid(), "parallel": request["parallel"]})
    sweep = run_sweep(path, int(request["parallel"]), notify=_log_line, stop=stop)
    _log_line({"event": "runner_done", "state": sweep.state, **sweep.counts()})
    return 0


def spawn_sweeper(sweep_dir: str | Path, parallel: int = 1) -> int:
    """Start a sweep runner in a new session and wait until it has claimed the sweep;
    returns its pid. TorchdeckError if it cannot (e.g. another runner is at it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.procs.sweeper"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(json.dumps({"sweep_dir": str(sweep_dir), "parallel": parallel}).encode())
    proc.stdin.close()
    first = proc.stdout.readline()
    err = b"" if first.strip() else proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    try:
        reply = json.loads(first) if first.strip() else None
    except ValueError:
        reply = None
    if reply is None:
        tail = err.decode(errors="replace").strip().splitlines()
        raise TorchdeckError(f"the sweep runner failed to start: {tail[-1] if tail else '?'}")
    if not reply["ok"]:
        proc.wait()
        raise TorchdeckError(reply["error"])
    return proc.pid


if __name__ == "__main__":
    raise SystemExit(sweeper_main())
