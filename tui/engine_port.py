"""What the app needs from the engine, in one small interface, so tests can inject a fake.

`RealEngine` goes through the engine's public API only. Runs started from the app live in
their own process (`engine.procs.worker.spawn_async`: a new session, so closing the terminal does
not stop them) and the app follows them through their run directory (`FollowHandle`), the
same way it attaches to a run started elsewhere or opens a finished one. Nothing here imports
torch at module import time; the blocking calls (`devices`, `device_memory`, `runs`, `curve`)
are made from worker threads.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class RunHandleLike(Protocol):
    run_id: str
    run_dir: Path | None

    @property
    def alive(self) -> bool: ...
    def drain(self) -> list[Any]: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def stop(self) -> None: ...
    def set_lr(self, lr: float) -> None: ...


@dataclass
class RunRow:
    """One run of the runs folder, as the runs screen lists it (plain values only)."""

    id: str
    path: str
    status: str  # effective status, or 'damaged'
    preset: str = "-"
    started: str = "-"
    duration_s: float | None = None
    steps: int | None = None
    final_loss: float | None = None
    best: str = "-"  # 'acc 0.97' or 'val 0.123'
    lr: float | None = None  # the lr it ended with
    config: dict[str, Any] = field(default_factory=dict)
    problem: str = ""  # why it is damaged

    @property
    def damaged(self) -> bool:
        return self.status.startswith("damaged")

    @property
    def damaged_toml(self) -> bool:
        """Damaged beyond a checkpoint: no run.toml, or one that cannot be read."""
        return self.damaged and self.problem.startswith(("no run.toml", "run.toml"))

    @property
    def alive(self) -> bool:
        return "(alive" in self.status

    @property
    def resumable(self) -> bool:
        return self.status in ("stopped", "killed", "diverged", "failed") and not self.problem


class Engine(Protocol):
    def presets(self, extra_dirs: Iterable[str | Path]) -> list[Any]: ...
    def devices(self) -> list[str]: ...
    def device_memory(self, device: str) -> str: ...
    async def start(self, config: Mapping[str, Any], runs_dir: str | Path | None) -> Any: ...
    async def spawn(self, job: dict[str, Any]) -> Any: ...
    def follow(self, run_dir: str | Path) -> Any: ...
    def runs(self, runs_dir: str | Path | None) -> list[RunRow]: ...
    def curve(self, run_dir: str | Path) -> list[tuple[int, float]]: ...


def _worker_handle_class():
    from engine.handle import FollowHandle

    class WorkerHandle(FollowHandle):
        """A FollowHandle that also knows the pid of the worker it started (None: attached)."""

        pid: int | None = None

    return WorkerHandle


def follow_handle(run_dir: str | Path, pid: int | None = None) -> Any:
    handle = _worker_handle_class()(run_dir)
    handle.pid = pid
    return handle


def checkpoint_problem(run_dir: Path) -> str:
    """'' or why a checkpoint is unreadable. torch.save writes zip archives: a truncated one has
    no end-of-central-directory record, which zipfile sees without loading torch."""
    for name in ("last.pt", "best.pt"):
        path = run_dir / "checkpoints" / name
        if path.exists() and not zipfile.is_zipfile(path):
            return f"checkpoints/{name} is truncated or not a checkpoint"
    return ""


def _duration(meta: dict[str, Any]) -> float | None:
    summary = meta.get("summary", {})
    if isinstance(summary.get("duration_s"), (int, float)):
        return float(summary["duration_s"])
    info = meta.get("run", {})
    started, ended = info.get("started"), info.get("ended")
    if hasattr(started, "timestamp") and hasattr(ended, "timestamp"):
        return max(0.0, ended.timestamp() - started.timestamp())
    return None


def run_row(run: Any) -> RunRow:
    """A RunRow from an engine RunDir; never raises for a damaged folder."""
    from engine.report import effective_status

    path = Path(run.path)
    try:
        meta = run.read_meta()
    except Exception as err:  # RunDirError: no run.toml or a TOML syntax error
        why = "no run.toml" if "no run.toml" in str(err) else "run.toml unreadable"
        return RunRow(id=run.id, path=str(path), status="damaged", problem=f"{why}: {err}")
    try:
        info, summary = meta.get("run", {}), meta.get("summary", {})
        config = meta.get("config", {})
        status = effective_status(meta)
        problem = checkpoint_problem(path)
        if problem:
            status = "damaged"
        if summary.get("test_accuracy") is not None:
            best = f"acc {summary['test_accuracy']:.4g}"
        elif summary.get("best_val_loss") is not None:
            best = f"val {summary['best_val_loss']:.4g}"
        else:
            best = "-"
        lr = config.get("optim", {}).get("lr")
        for change in meta.get("changes", []):
            if change.get("key") == "optim.lr":
                lr = change.get("new", lr)
        started = info.get("started")
        return RunRow(
            id=run.id, path=str(path), status=status, preset=str(info.get("preset", "-")),
            started=started.strftime("%Y-%m-%d %H:%M") if hasattr(started, "strftime")
            else str(started or "-"),
            duration_s=_duration(meta), steps=summary.get("steps"),
            final_loss=summary.get("final_loss"), best=best,
            lr=float(lr) if isinstance(lr, (int, float)) else None,
            config=config if isinstance(config, dict) else {}, problem=problem,
        )
    except Exception as err:  # a run.toml that parses but holds nonsense
        return RunRow(id=run.id, path=str(path), status="damaged",
                      problem=f"run.toml: {type(err).__name__}: {err}")


class RealEngine:
    def presets(self, extra_dirs: Iterable[str | Path]) -> list[Any]:
        from engine.presets import discover_presets

        return discover_presets(extra_dirs)

    def devices(self) -> list[str]:
        """Asked in a short-lived process: importing torch takes seconds of the GIL, and the
        app itself no longer needs torch (runs train in their own processes), so keys and
        redraws never wait for that import."""
        import json
        import subprocess
        import sys

        code = ("import json; from engine.devices import available_devices; "
                "print(json.dumps(available_devices()))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, check=False)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = done.stderr.strip().splitlines()
            raise RuntimeError(tail[-1] if tail else f"exit code {done.returncode}")
        return list(json.loads(lines[-1]))

    def device_memory(self, device: str) -> str:
        """'1.2/8.0 GiB' on CUDA (allocated by torch / total), '' elsewhere.

        The run lives in another process, so this process's allocator knows nothing of it:
        ask the driver (nvidia-smi's numbers) through torch.cuda.mem_get_info instead."""
        if not device.startswith("cuda"):
            return ""
        import torch

        index = int(device.partition(":")[2] or 0)
        free, total = torch.cuda.mem_get_info(index)
        return f"{(total - free) / 2**30:.1f}/{total / 2**30:.1f} GiB"

    async def spawn(self, job: dict[str, Any]) -> Any:
        """Start a worker process for a job (train/resume/replay); a handle following it.

        The blocking `engine.procs.worker.spawn` in a thread rather than `spawn_async`: the latter
        leaves its asyncio subprocess transport open, and that transport complains
        ('Event loop is closed') when it is collected after the app's loop has ended, which
        is the normal case for a detached run."""
        import asyncio

        from engine.procs.worker import spawn

        reply = await asyncio.to_thread(spawn, job)
        return follow_handle(reply["run_dir"], reply.get("pid"))

    async def start(self, config: Mapping[str, Any], runs_dir: str | Path | None) -> Any:
        return await self.spawn({"action": "train", "config": dict(config),
                                 "runs_dir": str(runs_dir) if runs_dir else None})

    def follow(self, run_dir: str | Path) -> Any:
        return follow_handle(run_dir)

    def runs(self, runs_dir: str | Path | None) -> list[RunRow]:
        from engine.rundir import list_runs

        return [run_row(run) for run in list_runs(Path(runs_dir) if runs_dir else None)]

    def curve(self, run_dir: str | Path) -> list[tuple[int, float]]:
        from engine.export import step_rows
        from engine.rundir import RunDir

        return [(step, loss) for step, _, loss, _ in step_rows(RunDir(Path(run_dir)))]
