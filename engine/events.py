"""Typed events a run emits: frozen dataclasses of plain Python values, never tensors.

Every event serialises to one JSON object (one line of events.jsonl) with a "type" key,
and `event_from_dict` turns such a line back into the same event, so a run followed from
its event log looks exactly like one followed in-process.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar


class RunStatus(enum.StrEnum):
    """A run's status as run.toml records it."""

    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    DIVERGED = "diverged"

    @property
    def live(self) -> bool:
        """Recorded as in progress (whether its process still is: see rundir.RunRecord)."""
        return self in (RunStatus.RUNNING, RunStatus.PAUSED)


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        out = {"type": self.type}
        out.update(dataclasses.asdict(self))
        return out


@dataclass(frozen=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    run_id: str
    preset: str
    run_dir: str
    device: str
    task: str
    total_steps: int
    total_epochs: int
    steps_per_epoch: int
    batch_size: int
    start_step: int = 0
    start_epoch: int = 0
    lr: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    param_shapes: dict[str, list[int]] = field(default_factory=dict)
    data: str = ""  # how the data is held: resident on the device, or streaming


@dataclass(frozen=True)
class StepMetrics(Event):
    """Training loss of every step from `first_step` (1-based) on, in order."""

    type: ClassVar[str] = "steps"
    first_step: int
    epoch: int
    losses: tuple[float, ...]
    lr: float
    elapsed_s: float
    samples_per_s: float
    steps_per_s: float
    # the rate of each step, where a [schedule] moves it every step (lr: the last one's);
    # empty (and left out of the log) where the rate held for the whole batch of steps
    lrs: tuple[float, ...] = ()

    @property
    def last_step(self) -> int:
        return self.first_step + len(self.losses) - 1

    def lr_at(self, i: int) -> float:
        """The rate step first_step + i used."""
        return self.lrs[i] if i < len(self.lrs) else self.lr

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not self.lrs:
            out.pop("lrs")
        return out


@dataclass(frozen=True)
class EpochEnd(Event):
    """An epoch finished: mean training loss, and eval results where the preset has them."""

    type: ClassVar[str] = "epoch"
    epoch: int
    step: int
    train_loss: float
    val_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamStat:
    name: str
    shape: tuple[int, ...]
    numel: int
    mean: float
    std: float
    min: float
    max: float
    grad_norm: float | None
    update_ratio: float | None
    zero_frac: float
    dead_frac: float | None = None
    values: tuple[float, ...] | None = None
    hist_counts: tuple[int, ...] = ()
    hist_edges: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class ParamStats(Event):
    """A snapshot of every parameter tensor at `step` (taken every few seconds)."""

    type: ClassVar[str] = "params"
    step: int
    params: tuple[ParamStat, ...]


@dataclass(frozen=True)
class FitSnapshot(Event):
    """For 1-D regression: the data and the model's current prediction on it."""

    type: ClassVar[str] = "fit"
    step: int
    x: tuple[float, ...]
    y: tuple[float, ...]
    y_pred: tuple[float, ...]


@dataclass(frozen=True)
class CheckpointSaved(Event):
    type: ClassVar[str] = "checkpoint"
    step: int
    epoch: int
    kind: str
    path: str


@dataclass(frozen=True)
class HparamChanged(Event):
    type: ClassVar[str] = "hparam"
    step: int
    key: str
    old: float
    new: float


@dataclass(frozen=True)
class Paused(Event):
    type: ClassVar[str] = "paused"
    step: int


@dataclass(frozen=True)
class Resumed(Event):
    type: ClassVar[str] = "resumed"
    step: int


@dataclass(frozen=True)
class RunWarning(Event):
    """Something the user should see that does not stop the run (e.g. nothing learned)."""

    type: ClassVar[str] = "warning"
    step: int
    message: str


@dataclass(frozen=True)
class Finished(Event):
    """The run ended: status is finished, stopped or diverged; summary as in run.toml."""

    type: ClassVar[str] = "finished"
    status: str
    step: int
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed(Event):
    type: ClassVar[str] = "failed"
    step: int
    reason: str
    summary: dict[str, Any] = field(default_factory=dict)  # as in run.toml (older logs: none)


GONE_REASON = (
    "the training process is gone without finishing (killed?); "
    "`torchdeck resume` or the runs screen (R) continues it"
)


@dataclass(frozen=True)
class ProcessGone(Event):
    """Never written by a run: a follower's word that the process training it ended without
    a final event (killed, or its machine went down)."""

    type: ClassVar[str] = "gone"
    step: int
    reason: str = GONE_REASON


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RunStarted,
        StepMetrics,
        EpochEnd,
        ParamStats,
        FitSnapshot,
        CheckpointSaved,
        HparamChanged,
        Paused,
        Resumed,
        RunWarning,
        Finished,
        Failed,
        ProcessGone,
    )
}

TERMINAL = (Finished, Failed, ProcessGone)


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from `Event.to_dict()` output (e.g. a line of events.jsonl)."""
    data = dict(data)
    cls = EVENT_TYPES[data.pop("type")]
    if cls is ParamStats:
        params = []
        for p in data["params"]:
            p = {k: _tuplify(v) if k not in ("name",) else v for k, v in p.items()}
            params.append(ParamStat(**p))
        data["params"] = tuple(params)
    elif cls is StepMetrics or cls is FitSnapshot:
        data = {k: _tuplify(v) for k, v in data.items()}
    return cls(**data)


def event_to_json(event: Event) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":"))


def event_from_json(line: str) -> Event:
    return event_from_dict(json.loads(line))


@dataclass(frozen=True)
class History(Event):
    """Never written by a run: a follower's summary of the run's history so far (a
    FollowHandle with history="summary" puts it first, then only what the log gains after
    `offset`). The loss curve in at most about 2 000 points of `per_point` steps each
    (ending at `steps`: min, max, mean and last of each), the newest raw steps exactly, the
    lr at its changes, the epochs (thinned evenly past 2 000), and the log's last event of
    each kind that draws the screen (run_started, epoch, params, fit, hparam, checkpoint,
    paused, resumed, warning, finished, failed; those before the last run_started left out),
    in log order."""

    type: ClassVar[str] = "history"
    last_step: int
    offset: int
    per_point: int = 1
    steps: tuple[int, ...] = ()
    loss_min: tuple[float, ...] = ()
    loss_max: tuple[float, ...] = ()
    loss_mean: tuple[float, ...] = ()
    loss_last: tuple[float, ...] = ()
    tail_steps: tuple[int, ...] = ()
    tail_losses: tuple[float, ...] = ()
    lr_steps: tuple[int, ...] = ()
    lr: tuple[float, ...] = ()
    epochs: tuple[int, ...] = ()
    epoch_steps: tuple[int, ...] = ()
    train_loss: tuple[float, ...] = ()
    val_loss: tuple[float | None, ...] = ()
    metrics: dict[str, tuple[float, ...]] = field(default_factory=dict)
    n_epochs: int = 0
    first_loss: float | None = None  # step 1's loss, exactly
    events: tuple[Event, ...] = ()
