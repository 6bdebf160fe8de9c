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

from tui.engine_tools import EngineTools


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
    reason: str = ""  # why it failed or diverged (run.toml [summary] reason)

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


@dataclass(frozen=True)
class Recovery:
    """One way to go on with a stopped, killed, failed or diverged run (the engine's
    engine.resume.Option, as plain data): what it does, from which step, at which lr."""

    kind: str  # resume (from a checkpoint) | fresh (again from step 0, same folder) | replay
    source: str | None  # the checkpoint a resume starts from: last | best
    step: int  # the step it starts from
    lr: float | None  # the lr proposed (None: the run's own)
    reached: int  # the step the run had reached (a resume goes back from there to `step`)
    label: str  # the engine's one line for it
    job: Any = None  # the engine.jobs job that does it, at `lr`

    def job_at(self, lr: float | None) -> Any:
        """The job at another learning rate (None or the proposed one: as it is)."""
        import dataclasses

        if lr is None or lr == self.lr:
            return self.job
        return dataclasses.replace(self.job, overrides=(f"optim.lr={lr!r}",))


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
    def ranks(self, run_dir: str | Path, live: bool) -> Any: ...  # engine.ranks.RankView
    def run_status(self, run_dir: str | Path) -> RunRow: ...
    def recovery_options(self, run_dir: str | Path) -> list[Recovery]: ...  # from a thread
    # sweeps, the LR finder and the gradient check (tui/engine_tools.py): from threads
    def sweeps(self, runs_dir: str | Path | None) -> list[Any]: ...  # engine.sweep.SweepView
    def sweep(self, path: str | Path) -> Any: ...
    def start_sweep(self, config: Mapping[str, Any], grid: list[tuple[str, list[Any]]],
                    runs_dir: str | Path | None, sets: list[str]) -> Any: ...
    def lr_find(self, config: Mapping[str, Any], on_step: Any, cancelled: Any,
                steps: int = 200) -> Any: ...  # engine.lr_find.LRFindResult
    def gradcheck(self, config: Mapping[str, Any], cancelled: Any) -> Any: ...


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
            reason=str(summary.get("reason") or ""),
        )
    except Exception as err:  # a run.toml that parses but holds nonsense
        return RunRow(id=run.id, path=str(record.path), status="damaged",
                      problem=f"run.toml: {type(err).__name__}: {err}")


class RealEngine(EngineTools):
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
        from engine.jobs import TrainJob, start_detached

        started = await asyncio.to_thread(start_detached, job)
        # a resumed run's folder holds its past: summarised (engine.summary), as on attach,
        # the same cost at any length (a replay's too, for the same reading); a new run's
        # folder is empty: its few events as they are
        history = "events" if isinstance(job, TrainJob) else "summary"
        return FollowHandle(started.run_dir, pid=started.pid, history=history)

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

    def ranks(self, run_dir: str | Path, live: bool) -> Any:
        """A distributed run's rank view (engine.ranks.RankView, flagged while `live`), or
        None; call from a thread."""
        from engine.ranks import read_ranks

        return read_ranks(Path(run_dir), live=live)

    def system(self, pid: int | None, device: str) -> Any:
        """CPU, RAM and GPU figures (engine.system: psutil and nvidia-ml-py, no torch); call
        from a thread."""
        from engine.system import sample

        return sample(pid, device or "cpu")

    def recovery_options(self, run_dir: str | Path) -> list[Recovery]:
        """What can work for a stopped, killed, failed or diverged run, best first
        (engine.resume.recovery_options: it reads the checkpoints, so torch): asked in a
        short-lived process, as `devices` is, so the app never loads torch. From a thread."""
        import json
        import subprocess
        import sys

        from engine.jobs import job_from_dict

        code = ("import json, sys; from dataclasses import asdict; "
                "from engine.jobs import job_to_dict; "
                "from engine.resume import recovery_options; d = sys.argv[1]; "
                "print(json.dumps([{**asdict(o), 'job': job_to_dict(o.job(d))} "
                "for o in recovery_options(d)]))")
        done = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True,
                              text=True, timeout=120, check=False)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = done.stderr.strip().splitlines()
            raise RuntimeError(tail[-1] if tail else f"exit code {done.returncode}")
        return [Recovery(**{**o, "job": job_from_dict(o["job"])}) for o in json.loads(lines[-1])]

    def run_status(self, run_dir: str | Path) -> RunRow:
        """One run's row again (the runs screen refreshes the alive ones); from a thread."""
        from engine.rundir import RunDir

        return run_row(RunDir(Path(run_dir)))
