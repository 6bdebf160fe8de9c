"""The engine port's part for sweeps, the LR finder and the gradient check (mixed into
tui.engine_port.RealEngine). Every call blocks: the app makes them from worker threads.

The LR finder and the gradient check build a model and train or differentiate it, so they run
in a short-lived child process (`python -m engine.lr_find`, `python -m engine.gradcheck`):
importing torch and training would otherwise hold the app's GIL for seconds, and the finder's
model, optimiser and data vanish with the process, so the user's next run starts fresh.
The child answers in JSON lines; `cancelled()` true kills it (the screen was closed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class ToolError(Exception):
    """The child process reported an error (its one line), or died."""


def run_child(module: str, request: dict[str, Any],
              on_line: Callable[[dict[str, Any]], None] | None = None,
              cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run `python -m module`, send it `request`, pass each JSON line to `on_line`; returns
    the last line. ToolError with the child's message when it fails; None-like {} when
    cancelled (the child is killed)."""
    proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin and proc.stdout and proc.stderr
    stop = threading.Event()

    def watch() -> None:  # kill the child as soon as the caller gives up on it
        while not stop.wait(0.1):
            if cancelled is not None and cancelled():
                proc.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    last: dict[str, Any] = {}
    try:
        proc.stdin.write(json.dumps(request, default=str))
        proc.stdin.close()
        for line in proc.stdout:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            last = item
            if on_line is not None and ("step" in item):
                on_line(item)
        err = proc.stderr.read()
        proc.wait()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if cancelled is not None and cancelled():
        return {}
    if "error" in last:
        raise ToolError(last["error"])
    if proc.returncode != 0 or not last:
        tail = err.strip().splitlines()
        raise ToolError(tail[-1] if tail else f"{module} exited with {proc.returncode}")
    return last


class EngineTools:
    # --- sweeps ---------------------------------------------------------------------------
    def sweeps(self, runs_dir: str | Path | None) -> list[Any]:
        """Every sweep of the runs folder (engine.sweep.SweepView); from a thread."""
        from engine.sweep import view_sweeps

        return view_sweeps(runs_dir)

    def sweep(self, path: str | Path) -> Any:
        """One sweep again (its runs' statuses and metrics); from a thread."""
        from engine.sweep import view_sweep

        return view_sweep(path)

    def start_sweep(self, config: Mapping[str, Any], grid: list[tuple[str, list[Any]]],
                    runs_dir: str | Path | None, sets: list[str]) -> Any:
        """Make a sweep of `config` over `grid` and start its runner in a session of its own
        (as `torchdeck sweep` does: it outlives the app); returns its SweepView. From a
        thread: it waits for the runner's handshake."""
        from engine.sweep import create_sweep, plan_config_sweep, start_sweep, view_sweep

        plan = plan_config_sweep(dict(config), grid, runs_dir, sets)
        sweep = create_sweep(plan)
        start_sweep(sweep.path, 1)
        return view_sweep(sweep.path)

    # --- the LR finder and the gradient check -----------------------------------------------
    def lr_find(self, config: Mapping[str, Any], on_step: Callable[[int, float, float], None],
                cancelled: Callable[[], bool], steps: int = 200) -> Any:
        """The LR range test on a fresh copy of `config`'s model, in a child process; None
        when cancelled. `on_step(step, lr, smoothed loss)` as it goes."""
        from engine.lr_find import LRFindResult

        done = run_child("engine.lr_find", {"config": dict(config), "steps": steps},
                         lambda item: on_step(item["step"], item["lr"], item["loss"]),
                         cancelled)
        return LRFindResult(**done["result"]) if done else None

    def gradcheck(self, config: Mapping[str, Any], cancelled: Callable[[], bool]) -> Any:
        """engine.gradcheck's report for `config`, in a child process; None when cancelled."""
        from engine.gradcheck import report_from_dict

        done = run_child("engine.gradcheck", {"config": dict(config)}, None, cancelled)
        return report_from_dict(done["report"]) if done else None
