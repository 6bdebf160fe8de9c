"""Following a run: fold the events drained since the last tick into the run's state and one
coalesced `Update` (all new losses, but only the newest parameter stats and fit snapshot),
so each pane redraws at most once per tick and only when something it shows changed.

Works on event objects only (plain values), so it does not import torch or the engine's
heavy modules; event classes are matched by their `type` name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

ACTIVE_STATES = ("starting", "running", "paused", "stopping")


@dataclass
class RunState:
    state: str = "idle"  # idle|starting|running|paused|stopping|finished|stopped|diverged|failed
    run_id: str = ""
    run_dir: str = ""
    preset: str = ""
    task: str = ""
    device: str = ""
    total_steps: int = 0
    total_epochs: int = 0
    steps_per_epoch: int = 0
    batch_size: int = 0
    step: int = 0
    epoch: int = 0
    lr: float = 0.0
    steps_per_s: float = 0.0
    samples_per_s: float = 0.0
    elapsed_s: float = 0.0
    last_checkpoint_t: float | None = None  # clock() when the last checkpoint arrived
    last_checkpoint_step: int = 0
    reason: str = ""  # why it failed
    warning: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    device_memory: str = ""  # filled in by a worker on CUDA

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def eta_s(self) -> float | None:
        if self.state != "running" or self.steps_per_s <= 0 or not self.total_steps:
            return None
        return max(0, self.total_steps - self.step) / self.steps_per_s


@dataclass
class Update:
    """What changed during one tick."""

    losses: list[tuple[int, tuple[float, ...]]] = field(default_factory=list)
    epochs: list[Any] = field(default_factory=list)  # EpochEnd events
    params: Any = None  # the newest ParamStats
    fit: Any = None  # the newest FitSnapshot
    started: Any = None  # RunStarted
    lr_changes: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ended: Any = None  # Finished or Failed
    state_changed: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.losses or self.epochs or self.params or self.fit or self.started
            or self.lr_changes or self.warnings or self.ended or self.state_changed
        )


class Follower:
    """Keeps a RunState up to date from events; `clock` timestamps checkpoints."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.run = RunState()

    def reset(self, state: str = "starting") -> None:
        self.run = RunState(state=state)

    def apply(self, events: Iterable[Any]) -> Update:
        up = Update()
        run = self.run
        before = run.state
        for event in events:
            kind = event.type
            if kind == "steps":
                up.losses.append((event.first_step, event.losses))
                run.step = event.last_step
                run.epoch = max(run.epoch, event.epoch)
                run.lr = event.lr
                run.elapsed_s = event.elapsed_s
                run.steps_per_s = event.steps_per_s
                run.samples_per_s = event.samples_per_s
            elif kind == "epoch":
                up.epochs.append(event)
                run.step = max(run.step, event.step)
            elif kind == "params":
                up.params = event
            elif kind == "fit":
                up.fit = event
            elif kind == "checkpoint":
                run.last_checkpoint_t = self.clock()
                run.last_checkpoint_step = event.step
            elif kind == "hparam":
                up.lr_changes.append(event)
                if event.key == "optim.lr":
                    run.lr = event.new
            elif kind == "paused":
                run.state = "paused"
                run.step = event.step
            elif kind == "resumed":
                run.state = "running"
            elif kind == "warning":
                run.warning = event.message
                up.warnings.append(event.message)
            elif kind == "run_started":
                up.started = event
                self._started(event)
            elif kind == "finished":
                run.state = event.status
                run.step = event.step
                run.summary = dict(event.summary)
                up.ended = event
            elif kind == "failed":
                run.state = "failed"
                run.reason = event.reason
                up.ended = event
        up.state_changed = run.state != before
        return up

    def _started(self, event: Any) -> None:
        run = self.run
        if run.state in ("starting", "idle"):
            run.state = "running"
        run.run_id = event.run_id
        run.run_dir = event.run_dir
        run.preset = event.preset
        run.task = event.task
        run.device = event.device
        run.total_steps = event.total_steps
        run.total_epochs = event.total_epochs
        run.steps_per_epoch = event.steps_per_epoch
        run.batch_size = event.batch_size
        run.step = event.start_step
        run.epoch = event.start_epoch
        run.lr = event.lr
        run.last_checkpoint_t = None
