"""Following a run: fold the events drained since the last tick into the run's state and one
coalesced `Update` (all new losses, but only the newest parameter stats and fit snapshot),
so each pane redraws at most once per tick and only when something it shows changed.

Works on event objects only (plain values), so it does not import torch or the engine's
heavy modules; event classes are matched by their `type` name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.rate import RateMeter

ACTIVE_STATES = ("starting", "running", "paused", "stopping")


def zero_gradient(stat: Any) -> bool:
    """A parameter snapshot whose gradient is zero (or has dead units)."""
    return bool(stat.dead_frac) or stat.grad_norm == 0.0


@dataclass
class RunState:
    # idle|starting|running|paused|stopping|finished|stopped|diverged|failed|killed
    state: str = "idle"
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
    # the headline numbers: from the epochs so far, then the run's summary
    val_loss: float | None = None
    best_val_loss: float | None = None
    accuracy: float | None = None
    best_accuracy: float | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the run's own (RunStarted)
    # the speed over the recent training time: pauses and the first steps' warm-up left out
    meter: RateMeter = field(default_factory=RateMeter, repr=False, compare=False)

    def take_epoch(self, event: Any) -> None:
        if event.val_loss is not None and math.isfinite(event.val_loss):
            self.val_loss = event.val_loss
            best = self.best_val_loss
            self.best_val_loss = event.val_loss if best is None else min(best, event.val_loss)
        acc = event.metrics.get("accuracy") if event.metrics else None
        if isinstance(acc, (int, float)) and math.isfinite(acc):
            self.accuracy = float(acc)
            best = self.best_accuracy
            self.best_accuracy = float(acc) if best is None else max(best, float(acc))

    def take_summary(self, summary: dict[str, Any]) -> None:
        acc = summary.get("test_accuracy")
        if isinstance(acc, (int, float)):
            self.accuracy = float(acc)
            self.best_accuracy = max(self.best_accuracy or 0.0, float(acc))
        best = summary.get("best_val_loss")
        if isinstance(best, (int, float)):
            self.best_val_loss = float(best)

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
    lrs: list[tuple[int, float]] = field(default_factory=list)  # (last step, lr) per chunk
    all_params: list[Any] = field(default_factory=list)  # every ParamStats, in order
    epochs: list[Any] = field(default_factory=list)  # EpochEnd events
    params: Any = None  # the newest ParamStats
    fit: Any = None  # the newest FitSnapshot
    started: Any = None  # RunStarted
    truncate_at: int | None = None  # a resumed run re-logs the steps after this one
    lr_changes: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ended: Any = None  # Finished, Failed or ProcessGone
    state_changed: bool = False
    history: Any = None  # a History event: the run's summarised past, drawn before the rest


class DeadTracker:
    """Which parameters get no gradient, judged over time rather than from one snapshot: a
    single batch may well give a zero gradient (a ReLU that happens to be off for the few
    samples in it) to a unit that learns. A parameter is dead when its gradient (or a whole
    unit's, dead_frac) was zero in `needed` consecutive ParamStats events, or, once the run
    has ended, in every one of them (a short run may have taken a single snapshot)."""

    def __init__(self, needed: int = 3) -> None:
        self.needed = needed
        self.streak: dict[str, int] = {}
        self.seen: dict[str, int] = {}
        self.ended = False

    def clear(self) -> None:
        self.streak.clear()
        self.seen.clear()
        self.ended = False

    def observe(self, event: Any) -> None:
        for stat in event.params:
            if stat.grad_norm is None and stat.dead_frac is None:
                continue  # no gradient yet: neither evidence for nor against
            self.seen[stat.name] = self.seen.get(stat.name, 0) + 1
            zero = zero_gradient(stat)
            self.streak[stat.name] = self.streak.get(stat.name, 0) + 1 if zero else 0

    def is_dead(self, name: str) -> bool:
        streak = self.streak.get(name, 0)
        if streak >= self.needed:
            return True
        return self.ended and streak > 0 and streak == self.seen.get(name, 0)

    def dead_names(self) -> set[str]:
        return {name for name in self.streak if self.is_dead(name)}


class Follower:
    """Keeps a RunState up to date from events; `clock` timestamps checkpoints."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.run = RunState()
        self.dead = DeadTracker()
        self.last_params: Any = None

    def reset(self, state: str = "starting") -> None:
        self.run = RunState(state=state)
        self.dead.clear()
        self.last_params = None

    def apply(self, events: Iterable[Any]) -> Update:
        up = Update()
        run = self.run
        before = run.state
        for event in events:
            self._one(event, up)
        up.state_changed = run.state != before
        return up

    def _one(self, event: Any, up: Update) -> None:
        run = self.run
        kind = event.type
        if kind == "history":
            self._history(event, up)
            return
        if kind == "steps":
            up.losses.append((event.first_step, event.losses))
            up.lrs.append((event.last_step, event.lr))
            run.step = event.last_step
            run.epoch = max(run.epoch, event.epoch)
            run.lr = event.lr
            run.elapsed_s = event.elapsed_s
            run.meter.add(event.elapsed_s, event.last_step)
            rate = run.meter.steps_per_s or 0.0
            batch = event.samples_per_s / event.steps_per_s if event.steps_per_s > 0 else \
                run.batch_size  # the global batch of a run in several processes
            run.steps_per_s, run.samples_per_s = rate, rate * batch
        elif kind == "epoch":
            up.epochs.append(event)
            run.step = max(run.step, event.step)
            run.take_epoch(event)
        elif kind == "params":
            up.params = event
            up.all_params.append(event)
            self.last_params = event
            self.dead.observe(event)
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
            up.ended = None  # a resumed run goes on after its earlier end
            if event.start_step > 0:
                self._truncate(up, event.start_step)
            self._started(event)
        elif kind == "finished":
            run.state = event.status
            run.summary = dict(event.summary)
            self._counters(event.step, run.summary, event.status == "diverged")
            run.take_summary(run.summary)
            run.reason = str(event.summary.get("reason", "")) if event.status == \
                "diverged" else ""
            self.dead.ended = True
            up.ended = event
        elif kind in ("failed", "gone"):
            run.state = "failed" if kind == "failed" else "killed"
            run.reason = event.reason
            if kind == "failed":
                self._counters(event.step, dict(event.summary or {}), False)
            self.dead.ended = True
            up.ended = event

    def _counters(self, step: int, summary: dict[str, Any], diverged: bool) -> None:
        """Step and epoch of an ended run as its record has them (one truth with `runs` and
        the headless lines): diverged_step and diverged_epoch, else steps and epochs."""
        run = self.run

        def count(key: str) -> int | None:
            value = summary.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        steps = count("diverged_step") if diverged else None
        epochs = count("diverged_epoch") if diverged else None
        steps = steps if steps is not None else count("steps")
        epochs = epochs if epochs is not None else count("epochs")
        run.step = steps if steps is not None else step
        if epochs is not None:
            run.epoch = epochs

    def _history(self, history: Any, up: Update) -> None:
        """A History event (a FollowHandle in summary mode puts it first): the curve goes to
        the screen as it is; the events it keeps (the last of each kind) set the state."""
        up.history = history
        run = self.run
        inner = Update()  # apart: a resumed run's start in the history cuts nothing
        for event in history.events:
            self._one(event, inner)
        # the curve holds the epochs: only the newest epoch's event would add a point twice
        up.started = inner.started or up.started
        up.params = inner.params or up.params
        up.all_params.extend(inner.all_params)
        up.fit = inner.fit or up.fit
        up.lr_changes.extend(inner.lr_changes)
        up.warnings.extend(inner.warnings)
        up.ended = inner.ended
        run.step = max(run.step, history.last_step)
        run.epoch = max(run.epoch, history.epochs[-1] if history.epochs else 0)
        if history.lr:  # the lr of the newest steps
            run.lr = history.lr[-1]
        vals = [v for v in history.val_loss if v is not None and math.isfinite(v)]
        if vals:
            run.val_loss = vals[-1]
            run.best_val_loss = min(vals)
        accs = [a for a in history.metrics.get("accuracy", ()) if math.isfinite(a)]
        if accs:
            run.accuracy = accs[-1]
            run.best_accuracy = max(accs)
        if run.summary:
            run.take_summary(run.summary)

    @staticmethod
    def _truncate(up: Update, step: int) -> None:
        """A resumed run logs the steps after `step` again: drop them from this update, and
        have what earlier updates drew cut there."""
        up.truncate_at = step if up.truncate_at is None else min(up.truncate_at, step)
        up.losses = [(first, losses[: step - first + 1]) for first, losses in up.losses
                     if first <= step]
        up.lrs = [(last, lr) for last, lr in up.lrs if last <= step]
        up.epochs = [e for e in up.epochs if e.step <= step]
        up.all_params = [p for p in up.all_params if p.step <= step]

    def _started(self, event: Any) -> None:
        run = self.run
        run.state = "running"  # also after an earlier end: a resumed run goes on
        run.reason = ""
        run.summary = {}
        if event.start_step == 0:
            self.dead.clear()
        self.dead.ended = False
        run.run_id = event.run_id
        run.run_dir = run.run_dir or event.run_dir  # the folder followed, if known
        run.preset = event.preset
        run.task = event.task
        run.device = event.device
        run.total_steps = event.total_steps
        run.total_epochs = event.total_epochs
        run.steps_per_epoch = event.steps_per_epoch
        run.batch_size = event.batch_size
        run.step = event.start_step
        run.epoch = event.start_epoch
        run.meter.reset()
        run.lr = event.lr
        run.config = dict(event.config or {})
        run.last_checkpoint_t = None
