"""What the app needs from the engine, in one small interface, so tests can inject a fake.

`RealEngine` goes through the engine's public API only. Runs started from the app live in
their own process (`engine.jobs.start_detached`: a new session, so closing the terminal does not
stop them) and the app follows them through their run directory (`FollowHandle`), the
same way it attaches to a run started elsewhere or opens a finished one. Nothing here imports
torch at module import time; the blocking calls (`devices`, `device_memory`, `runs`, `curve`)
are made from worker threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


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
    async def spawn(self, job: Any) -> Any: ...
    def follow(self, run_dir: str | Path) -> Any: ...
    def runs(self, runs_dir: str | Path | None) -> list[RunRow]: ...
    def curve(self, run_dir: str | Path) -> list[tuple[int, float]]: ...
    def system(self, pid: int | None, device: str) -> Any: ...  # engine.system.SystemSample
    def run_status(self, run_dir: str | Path) -> RunRow: ...


def run_row(run: Any) -> RunRow:
    """A RunRow from an engine RunDir's record; never raises for a damaged folder."""
    record = run.record()
    if record.damaged and not record.meta:
        return RunRow(id=run.id, path=str(record.path), status="damaged", problem=record.problem)
    try:
        info, summary = record.info, record.summary
        if summary.get("test_accuracy") is not None:
            best = f"acc {summary['test_accuracy']:.4g}"
        elif summary.get("best_val_loss") is not None:
            best = f"val {summary['best_val_loss']:.4g}"
        else:
            best = "-"
        started = info.get("started")
        return RunRow(
            id=run.id, path=str(record.path),
            status="damaged" if record.damaged else record.label,
            preset=str(info.get("preset", "-")),
            started=started.strftime("%Y-%m-%d %H:%M") if hasattr(started, "strftime")
            else str(started or "-"),
            duration_s=record.duration_s, steps=summary.get("steps"),
            final_loss=summary.get("final_loss"), best=best, lr=record.lr,
            config=record.config, problem=record.problem,
        )
    except Exception as err:  # a run.toml that parses but holds nonsense
        return RunRow(id=run.id, path=str(record.path), status="damaged",
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

    async def spawn(self, job: Any) -> Any:
        """Start a worker process for a job (engine.jobs: train/resume/replay) in its own
        session, waiting in a thread; a handle following its run folder."""
        import asyncio

        from engine.handle import FollowHandle
        from engine.jobs import start_detached

        started = await asyncio.to_thread(start_detached, job)
        return FollowHandle(started.run_dir, pid=started.pid)

    async def start(self, config: Mapping[str, Any], runs_dir: str | Path | None) -> Any:
        from engine.jobs import TrainJob

        return await self.spawn(TrainJob(dict(config), str(runs_dir) if runs_dir else None))

    def follow(self, run_dir: str | Path) -> Any:
        """Follow a run folder: its history as one summary event (the same cost at any
        length: engine.summary), then what it logs after that."""
        from engine.handle import FollowHandle

        return FollowHandle(run_dir, history="summary")

    def runs(self, runs_dir: str | Path | None) -> list[RunRow]:
        from engine.rundir import list_runs

        return [run_row(run) for run in list_runs(Path(runs_dir) if runs_dir else None)]

    def curve(self, run_dir: str | Path) -> list[tuple[int, float]]:
        """The run's loss curve from its summary (about 2,000 points whatever its length);
        call from a thread."""
        from engine.summary import read_curve

        curve = read_curve(run_dir, max_points=2000)
        return list(zip(curve.steps.tolist(), curve.mean.tolist(), strict=True))

    def system(self, pid: int | None, device: str) -> Any:
        """CPU, RAM and GPU figures (engine.system: psutil and nvidia-ml-py, no torch); call
        from a thread."""
        from engine.system import sample

        return sample(pid, device or "cpu")

    def run_status(self, run_dir: str | Path) -> RunRow:
        """One run's row again (the runs screen refreshes the alive ones); from a thread."""
        from engine.rundir import RunDir

        return run_row(RunDir(Path(run_dir)))
