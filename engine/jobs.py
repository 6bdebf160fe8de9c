"""Jobs: what to train, as typed values, and the one place that turns a job into a trainer.

    TrainJob(config)                      a new run of a resolved config
    ResumeJob(ref, overrides, source)     continue a run from a checkpoint (engine/resume.py
                                          has the rules: which checkpoint, which keys may change)
    ReplayJob(ref, overrides)             a new run with a run's config and its live changes

A job crosses to another process (a detached worker, torchrun's ranks) as JSON:
`job_to_dict` / `job_from_dict`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import TorchdeckError


@dataclass(frozen=True)
class TrainJob:
    config: dict[str, Any]
    runs_dir: str | None = None
    device_option: str = "[train] device"  # how an error about the device names its source


@dataclass(frozen=True)
class ResumeJob:
    ref: str  # run id, unique prefix, or folder
    runs_dir: str | None = None
    overrides: tuple[str, ...] = ()
    source: str = "auto"  # auto | last | best (auto: best.pt for a diverged run)
    device: str | None = None  # for a distributed resume: where the ranks train


@dataclass(frozen=True)
class ReplayJob:
    ref: str
    runs_dir: str | None = None
    overrides: tuple[str, ...] = ()


Job = TrainJob | ResumeJob | ReplayJob
_ACTIONS: dict[str, type] = {"train": TrainJob, "resume": ResumeJob, "replay": ReplayJob}


def action_of(job: Job) -> str:
    return next(name for name, cls in _ACTIONS.items() if isinstance(job, cls))


def job_to_dict(job: Job) -> dict[str, Any]:
    out = {"action": action_of(job), **dataclasses.asdict(job)}
    if "overrides" in out:
        out["overrides"] = list(out["overrides"])
    return out


def job_from_dict(data: dict[str, Any]) -> Job:
    data = dict(data)
    cls = _ACTIONS.get(data.pop("action", None))
    if cls is None:
        raise TorchdeckError(f"unknown job {data!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if "overrides" in kwargs:
        kwargs["overrides"] = tuple(kwargs["overrides"])
    return cls(**kwargs)


def prepare(job: Job, sinks: Iterable[Any] = (), control: Any = None) -> Any:
    """The trainer for a job, positioned and ready to `run()`; raises TorchdeckError (one
    line for the user) before anything is written if the job cannot run."""
    from engine.control import Control
    from engine.train.loop import Trainer

    control = control or Control()
    if isinstance(job, TrainJob):
        from engine.build import prepare_run

        prep = prepare_run(job.config, job.runs_dir, job.device_option)
        return Trainer(prep, sinks=sinks, control=control)
    if isinstance(job, ResumeJob):
        from engine.resume import prepare_resume, resumed_trainer

        prep, ckpt, new_lr = prepare_resume(job.ref, job.runs_dir, job.overrides, job.source)
        return resumed_trainer(prep, ckpt, new_lr, sinks=sinks, control=control)
    from engine.resume import prepare_replay

    prep, changes = prepare_replay(job.ref, job.runs_dir, job.overrides)
    return Trainer(prep, sinks=sinks, control=control, scheduled=changes)


@dataclass(frozen=True)
class Detached:
    """A job training in its own process and session."""

    run_id: str
    run_dir: Path
    pid: int


def start_detached(job: Job) -> Detached:
    """Start a job in a worker process of its own session (closing the terminal does not
    stop it) and wait until its run folder exists; raises TorchdeckError if it cannot start."""
    from engine.procs.worker import spawn

    reply = spawn({"job": job_to_dict(job)})
    return Detached(reply["run_id"], Path(reply["run_dir"]), reply["pid"])
