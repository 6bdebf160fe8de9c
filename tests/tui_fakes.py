"""A fake engine for the app's tests: fixed presets and a fixed, deterministic event stream.

No torch, no threads, no timing: what the app shows depends only on these values.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine import events as ev
from engine.presets import PresetInfo
from engine.schema import validate
from engine.system import SystemSample

# fixed machine figures: pictures never depend on the machine the tests run on
FAKE_SYSTEM = SystemSample(cpu_percent=97.0, rss_bytes=int(1.5 * 2**30), ram_used=6 * 2**30,
                           ram_total=16 * 2**30)
FAKE_GPU = SystemSample(cpu_percent=101.0, rss_bytes=int(2.5 * 2**30), ram_used=6 * 2**30,
                        ram_total=16 * 2**30, gpu_name="NVIDIA H100 80GB HBM3",
                        gpu_util_percent=87.0, gpu_mem_used=31 * 2**30,
                        gpu_mem_total=80 * 2**30, gpu_temp_c=61.0)

FAKE_PRESETS = {
    "line": {
        "name": "line",
        "title": "Line: fit y = 2x + 1",
        "description": "A fake 1-D regression preset for the app's tests.",
        "task": "regression",
        "data": {"source": "fixed", "x": [0.0, 1.0, 2.0], "y": [1.0, 3.0, 5.0]},
        "model": {"layers": [{"type": "Linear", "in_features": 1, "out_features": 1}]},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "train": {"epochs": 50, "batch_size": 3, "loss": "mse", "seed": 0},
    },
    "digits": {
        "name": "digits",
        "title": "Digits: a fake classifier",
        "description": "A fake classification preset for the app's tests.",
        "task": "classification",
        "data": {"source": "digits"},
        "model": {"layers": [{"type": "Linear", "in_features": 64, "out_features": 10}]},
        "optim": {"name": "adam", "lr": 0.001},
        "train": {"epochs": 5, "batch_size": 32, "loss": "cross_entropy", "seed": 0},
        "eval": {},
    },
}


def fake_presets() -> list[PresetInfo]:
    out = [
        PresetInfo(name=name, path=Path(f"/presets/{name}.toml"), title=raw["title"],
                   task=raw["task"], description=raw["description"], builtin=True,
                   config=validate(raw))
        for name, raw in FAKE_PRESETS.items()
    ]
    out.append(PresetInfo(name="broken", path=Path("/presets/broken.toml"), builtin=False,
                          error="/presets/broken.toml: [optim] lr: expected a number > 0, "
                                "got a string 'fast'"))
    return out


def _stat(name: str, shape: tuple[int, ...], mean: float, grad: float | None,
          dead: float | None = None) -> ev.ParamStat:
    numel = math.prod(shape) if shape else 1
    values = tuple(round(mean + 0.1 * i, 3) for i in range(numel)) if numel <= 16 else None
    return ev.ParamStat(
        name=name, shape=shape, numel=numel, mean=mean, std=0.25, min=mean - 0.5,
        max=mean + 0.5, grad_norm=grad, update_ratio=1e-3 if grad else 0.0, zero_frac=0.0,
        dead_frac=dead, values=values,
        hist_counts=tuple(int(10 * math.exp(-((i - 9.5) / 4) ** 2)) for i in range(20)),
        hist_edges=(mean - 0.5, mean + 0.5),
    )


def fake_events(run_dir: str, config: dict[str, Any], steps: int = 400) -> list[ev.Event]:
    """A run halfway through: 40 epochs of 10 steps out of 50 epochs."""
    spe = 10
    out: list[ev.Event] = [
        ev.RunStarted(run_id="20250101-000000-line", preset=config["name"], run_dir=run_dir,
                      device="cpu", task=config["task"], total_steps=500, total_epochs=50,
                      steps_per_epoch=spe, batch_size=3, lr=config["optim"]["lr"],
                      config=config, param_shapes={"0.weight": [1, 1], "0.bias": [1]})
    ]
    for first in range(1, steps + 1, 50):
        losses = tuple(4.0 * math.exp(-s / 80) + 0.05 * math.sin(s) ** 2 + 0.01
                       for s in range(first, first + 50))
        out.append(ev.StepMetrics(first_step=first, epoch=(first - 1) // spe + 1, losses=losses,
                                  lr=config["optim"]["lr"], elapsed_s=first / 100,
                                  samples_per_s=300.0, steps_per_s=100.0))
        epoch = (first + 49) // spe
        metrics = {"accuracy": min(0.99, 0.5 + epoch / 100)} if config["task"] == \
            "classification" else {}
        out.append(ev.EpochEnd(epoch=epoch, step=first + 49, train_loss=losses[-1],
                               val_loss=losses[-1] * 1.2, metrics=metrics))
    out.append(ev.CheckpointSaved(step=steps, epoch=steps // spe, kind="last",
                                  path=f"{run_dir}/checkpoints/last.pt"))
    # three snapshots in a row with no gradient for 1.weight: dead (one alone would not be)
    for at in (steps - 100, steps - 50, steps):
        out.append(ev.ParamStats(step=at, params=(
            _stat("0.weight", (1, 1), 1.9, 0.12),
            _stat("0.bias", (1,), 0.8, 0.05),
            _stat("1.weight", (8, 4), 0.0, 0.0, dead=0.25),
        )))
    if config["task"] == "regression":
        xs = tuple(float(x) for x in range(-10, 10))
        out.append(ev.FitSnapshot(step=steps, x=xs, y=tuple(max(0.0, 2 * x + 1) for x in xs),
                                  y_pred=tuple(max(0.0, 1.9 * x + 0.8) for x in xs)))
    return out


class FakeHandle:
    def __init__(self, run_dir: Path, events: list[ev.Event]) -> None:
        self.run_id = run_dir.name
        self.run_dir = run_dir
        self._buffer = list(events)
        self.calls: list[tuple[str, Any]] = []
        self.step = max((getattr(e, "step", 0) for e in events), default=0)
        self.lr = 0.01
        self.finished = False
        self.closed = False
        self.pid: int | None = 4242  # a worker's pid, as engine.handle.FollowHandle has

    @property
    def alive(self) -> bool:
        return not self.finished

    def drain(self) -> list[ev.Event]:
        out, self._buffer = self._buffer, []
        return out

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def pause(self) -> None:
        self.calls.append(("pause", None))
        self._buffer.append(ev.Paused(step=self.step))

    def resume(self) -> None:
        self.calls.append(("resume", None))
        self._buffer.append(ev.Resumed(step=self.step))

    def stop(self) -> None:
        self.calls.append(("stop", None))
        self._buffer.append(ev.Finished(status="stopped", step=self.step,
                                        summary={"final_loss": 0.0123}))
        self.finished = True

    def set_lr(self, lr: float) -> None:
        self.calls.append(("set_lr", lr))
        self._buffer.append(ev.HparamChanged(step=self.step, key="optim.lr", old=self.lr, new=lr))
        self.lr = lr

    def join(self, timeout: float | None = None) -> None:
        pass


def fake_recoveries(run_dir: str, checkpoint: bool = True) -> list[Any]:
    """Options as the engine gives them for the fake diverged run (lr 0.01, diverged at step
    101): a resume from best.pt at step 50 where there is a checkpoint, then a fresh start
    and a replay, each at lr 0.001."""
    from engine.jobs import ReplayJob, ResumeJob
    from tui.engine_port import Recovery

    sets = ("optim.lr=0.001",)
    out = [Recovery("resume", "best", 50, 0.001, 101, "Resume from best.pt at step 50",
                    ResumeJob(run_dir, overrides=sets, source="best"))] if checkpoint else []
    out.append(Recovery("fresh", None, 0, 0.001, 101, "Start again from step 0",
                        ResumeJob(run_dir, overrides=sets, source="fresh")))
    out.append(Recovery("replay", None, 0, 0.001, 101, "Replay as a new run",
                        ReplayJob(run_dir, overrides=sets)))
    return out


class FakeEngine:
    """Presets from FAKE_PRESETS; `start` returns a FakeHandle replaying `fake_events`."""

    def __init__(self, devices: list[str] | None = None, fail_start: Exception | None = None,
                 events: Any = None) -> None:
        self._devices = devices or ["cpu"]
        self.fail_start = fail_start
        self.events = events or fake_events
        self.handles: list[FakeHandle] = []
        self.started: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any]] = []
        self.run_rows: list[Any] = []
        self.system_calls: list[tuple[Any, str]] = []
        self.recoveries: Any = None  # run_dir -> [Recovery] (None: fake_recoveries)

    def presets(self, extra_dirs: Any) -> list[PresetInfo]:
        return fake_presets()

    def devices(self) -> list[str]:
        return list(self._devices)

    def device_memory(self, device: str) -> str:
        return "1.0/80.0 GiB" if device.startswith("cuda") else ""

    async def start(self, config: dict[str, Any], runs_dir: Any) -> FakeHandle:
        if self.fail_start is not None:
            raise self.fail_start
        self.started.append(config)
        run_dir = Path(runs_dir or "runs") / "20250101-000000-line"
        handle = FakeHandle(run_dir, self.events(str(run_dir), config))
        self.handles.append(handle)
        return handle

    async def spawn(self, job: Any) -> FakeHandle:
        """Resume and replay jobs: recorded; the run they start replays the fake stream."""
        self.jobs.append(job)
        if self.fail_start is not None:
            raise self.fail_start
        run_dir = Path(str(getattr(job, "ref", None) or "runs/20250101-000000-line"))
        config = validate(FAKE_PRESETS["line"])
        handle = FakeHandle(run_dir, self.events(str(run_dir), config))
        self.handles.append(handle)
        return handle

    def follow(self, run_dir: Any) -> FakeHandle:
        """Attach: a finished fake run (its whole stream, then Finished)."""
        config = validate(FAKE_PRESETS["line"])
        events = [*self.events(str(run_dir), config),
                  ev.Finished(status="finished", step=400, summary={"final_loss": 0.02})]
        handle = FakeHandle(Path(run_dir), events)
        handle.finished = True
        self.handles.append(handle)
        return handle

    def runs(self, runs_dir: Any) -> list[Any]:
        return list(self.run_rows)

    def curve(self, run_dir: Any) -> list[tuple[int, float]]:
        return [(s, 1.0 / s) for s in range(1, 101)]

    def system(self, pid: Any, device: str) -> SystemSample:
        self.system_calls.append((pid, device))
        return FAKE_GPU if str(device).startswith("cuda") else FAKE_SYSTEM

    def recovery_options(self, run_dir: Any) -> list[Any]:
        """What can work for a run (engine.resume.recovery_options): `recoveries(run_dir)`,
        or a resume from best.pt at step 50 of 101 at a tenth of the fake's lr."""
        return list((self.recoveries or fake_recoveries)(str(run_dir)))

    def run_status(self, run_dir: Any) -> Any:
        """The row of `run_dir` in run_rows (tests change it to show a run ending)."""
        for row in self.run_rows:
            if row.path == str(run_dir):
                return row
        raise FileNotFoundError(run_dir)


def kill_workers(runs_dir: Path, pids: Any = ()) -> list[int]:
    """SIGKILL every training worker still alive that a test started: the pids given, and
    every pid recorded in a run.toml under `runs_dir` that is an `engine.procs.worker` process (a
    stray worker spinning on a core would slow down everything else). Returns those killed."""
    import os
    import signal
    import tomllib

    candidates = set(pids)
    for toml in Path(runs_dir).glob("*/run.toml") if Path(runs_dir).is_dir() else ():
        try:
            with open(toml, "rb") as fh:
                pid = tomllib.load(fh).get("run", {}).get("pid")
        except (OSError, ValueError):
            continue
        if isinstance(pid, int):
            candidates.add(pid)
    killed = []
    for pid in candidates:
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue  # gone already
        if b"engine.procs.worker" not in cmdline:
            continue  # not ours (or the pid was reused)
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


async def wait_for(pilot: Any, condition: Any, timeout: float = 60.0, what: str = "") -> None:
    """Wait for the state a test asserts (never a fixed pause); fail naming it."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            run_state = getattr(getattr(pilot.app, "controller", None), "run_state", None)
            state = f"; run state {run_state.state}" if run_state is not None else ""
            raise AssertionError(f"timed out waiting for {what or 'the condition'}{state}")
        await pilot.pause(0.05)
    await pilot.pause()


def table_rows(screen: Any) -> list[list]:
    """The rows of the screen's DataTable, in display order."""
    from textual.widgets import DataTable

    table = screen.query_one(DataTable)
    return [table.get_row(row.key) for row in table.ordered_rows]
