"""The engine's public, asynchronous face.

    handle = await start_run(config, runs_dir="runs")
    async for event in handle.events():
        ...
    handle.pause(); handle.resume(); handle.set_lr(0.01); handle.stop()

Preparation (importing torch, loading data) and training run in a worker thread, so an
asyncio program such as the app never blocks on them. The handle is engine.handle's
LocalHandle; a run in another process is followed with engine.handle.FollowHandle, which
has the same face.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.events import Event
from engine.handle import LocalHandle
from engine.jobs import Job, TrainJob, prepare


async def start_run(
    config: Mapping[str, Any],
    runs_dir: str | Path | None = None,
    sinks: Iterable[Any] = (),
) -> LocalHandle:
    """Check and prepare a run from a resolved config, then start training it in a thread.

    Raises TorchdeckError (ConfigError, DeviceError, DataError, RunDirError) before anything
    is written if the config cannot run here.
    """
    return await start_job(TrainJob(dict(config), str(runs_dir) if runs_dir else None), sinks)


async def start_job(job: Job, sinks: Iterable[Any] = ()) -> LocalHandle:
    """`start_run` for any job (train, resume, replay)."""
    handle = LocalHandle(asyncio.get_running_loop())
    # importing torch and loading data both happen off the event loop
    trainer = await asyncio.to_thread(prepare, job, [handle.sink, *sinks], handle.control)
    handle.run_id, handle.run_dir = trainer.p.run.id, trainer.p.run.path
    handle.start(trainer.run)
    return handle


def run_sync(
    config: Mapping[str, Any],
    runs_dir: str | Path | None = None,
    sinks: Iterable[Any] = (),
    control: Any = None,
    device_option: str = "[train] device",
) -> Event:
    """Prepare and train in the calling thread (headless CLI, tests); returns the last event."""
    job = TrainJob(dict(config), str(runs_dir) if runs_dir else None, device_option)
    return prepare(job, sinks, control).run()
