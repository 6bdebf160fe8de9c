"""The training loop. It runs in whatever thread calls `Trainer.run` and talks to the world
only through events (to the run-folder writer, then the sinks) and commands (from a Control).

`Trainer._loop` is the whole step loop, on one screen; each side effect in it is one named
call at a fixed point. Per step it does the model's work plus a list append and a clock
read: the loss stays on the device, and `tick` fetches all of them every `log_every_s` (the
one host sync). The parts, each in its own module:

    losses.py        LossBuffer: deferred loss fetch, epoch means, divergence check
    checkpointer.py  Checkpointer: last.pt/best.pt, payload, best rule, finite guard, restore
    strategy.py      OneProcess or DDP: the model called, loss reduction, sync points, commands
    writer.py        RunWriter: events.jsonl, and run.toml derived from the events
    recipe.py        Recipe: the step itself (schedule, clipping, accumulation, precision),
                     its per-epoch clip counts and its checkpoint state; early_stop.py
"""

from __future__ import annotations

import errno
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from engine import events as ev
from engine.build import PreparedRun
from engine.control import Control
from engine.diagnose import nothing_learned_message
from engine.stats import fit_snapshot, param_stats, snapshot
from engine.train.checkpointer import Checkpointer, nonfinite_params
from engine.train.evaluation import evaluate, report_values
from engine.train.losses import Diverged, LossBuffer
from engine.train.recipe import Recipe
from engine.train.strategy import strategy_for
from engine.train.writer import RunWriter

Sink = Callable[[ev.Event], None]
INITIAL_SNAPSHOT_MAX = 10_000_000  # parameters: keep the initial weights for the diagnosis


class _Stop(Exception):
    """End the loop: "stopped" (a stop command) or "finished" (early stopping)."""

    def __init__(self, status: str = "stopped") -> None:
        super().__init__(status)
        self.status = status


def lr_problem(value: Any) -> str:
    """'' or why `value` cannot be a learning rate (the rule of --set optim.lr)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number > 0, got {type(value).__name__}"
    if not math.isfinite(value) or value <= 0:
        return "expected a finite number > 0"
    return ""


def one_line(err: BaseException) -> str:
    """An error as one line; a full disk as 'no space left on device (<path>)'."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"no space left on device ({err.filename or 'unknown path'})"
    text = f"{type(err).__name__}: {err}".strip()
    return text.splitlines()[0] if text else type(err).__name__


class Trainer:
    def __init__(
        self,
        prep: PreparedRun,
        sinks: Iterable[Sink] = (),
        control: Control | None = None,
        scheduled: Iterable[dict[str, Any]] = (),
        dist: Any = None,
    ) -> None:
        """`scheduled`: recorded changes ({step, key, new}) to re-apply before step+1 (replay).
        `dist`: an engine.procs.distributed.DistContext when this is one of several processes
        (prep made ready by engine.train.strategy.DDP.prepare)."""
        self.p = prep
        self.sinks = list(sinks)
        self.control = control or Control()
        self.scheduled = sorted((dict(c) for c in scheduled), key=lambda c: c["step"])
        self.strategy = strategy_for(prep, dist)
        train, data = prep.config["train"], prep.data
        self.steps_per_epoch = data.steps_per_epoch
        self.global_batch = getattr(data, "global_batch", data.batch_size)
        if train["steps"]:
            self.total_steps = train["steps"]
            self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        else:
            self.total_epochs = train["epochs"]
            self.total_steps = self.total_epochs * self.steps_per_epoch
        self.log_every = self.strategy.tick_every(train["log_every_s"])
        self.stats_every = train["stats_every_s"]
        has_test = getattr(data, "has_test", data.x_test is not None)
        self.eval_cfg = prep.config.get("eval") if has_test else None
        self.writer = RunWriter(prep.run)
        self.losses = LossBuffer(self.strategy.reduce)
        self.ckpt = Checkpointer(prep, train["checkpoint_every_s"], self.eval_cfg is not None)
        self.step = 0
        self.epoch = 0  # completed epochs
        self.batch = 0  # completed batches in the current epoch
        self.best_val_loss: float | None = None
        self.last_metrics: dict[str, float] = {}
        self.resumed_from: int | None = None
        self._initial: list[torch.Tensor] | None = None  # weights at the start (diagnosis)
        self._stats_due = self.strategy.is_main
        self._last_stats_t = 0.0
        self._stats_step = -1  # the step of the last ParamStats
        self._active_s = 0.0  # training time before the current segment (pauses excluded)
        self._segment_start = 0.0
        self._segment_step = 0
        self._paused = False  # while paused, elapsed time stands still
        self.notice: str | None = None  # one line for the user before the run (a restart)
        self.recipe = Recipe(self)  # the step: schedule, clipping, accumulation, precision
        self.early = self.recipe.early

    def run(self) -> ev.Event:
        """Train to the end (or until stopped); returns the Finished or Failed event."""
        try:
            self._start()
            try:
                return self._finish(self._loop())
            except Diverged as diverged:
                return self._diverged(diverged)
        except (Exception, SystemExit) as err:  # any failure in training: the run failed
            return self._failed(err)
        finally:
            try:
                self.writer.close()
            except OSError:  # the disk is full: the run ended failed, saying so
                pass

    # --- the loop ---------------------------------------------------------------------------
    def _loop(self) -> str:
        """Every step until the end or a stop; returns "finished" or "stopped"."""
        s = self.strategy
        model, data, step = s.model, self.p.data, self.recipe.step
        control, sync_every, log_every = s.polled(self.control), s.sync_every, self.log_every
        keep_loss = self.losses.pending.append
        next_change = self.scheduled[0]["step"] if self.scheduled else -1
        next_tick = time.perf_counter() + log_every  # inf where ticks come at sync points
        try:
            while self.epoch < self.total_epochs and self.step < self.total_steps:
                for x, y in data.batches(self.epoch, self.batch):
                    if control.pending:
                        self.commands()
                    if self.step == next_change:
                        next_change = self.apply_scheduled()
                    before = snapshot(model) if self._stats_due else None
                    keep_loss(step(x, y))  # stays on the device: no host sync per step
                    self.step += 1
                    self.batch += 1
                    if before is not None:
                        self.stats(before)
                    now = time.perf_counter()
                    if now >= next_tick:
                        self.tick(now)  # fetches the losses: the one host sync per interval
                        next_tick = now + log_every
                    elif sync_every and self.step % sync_every == 0:
                        self.sync(now)
                    if self.step >= self.total_steps:
                        break
                if self.batch >= self.steps_per_epoch or self.step >= self.total_steps:
                    self.end_epoch()
        except _Stop as stop:
            return stop.status
        return "finished"

    # --- the loop's side effects, in the order they come ------------------------------------
    def commands(self, checkpoint: bool = False) -> None:
        """Apply the commands that arrived (in a distributed run: rank 0's, on every rank;
        `checkpoint`: last.pt is due, which a distributed run writes as a command)."""
        for command, value in self.strategy.commands(self.control, checkpoint):
            self._apply(command, value)

    def apply_scheduled(self) -> int:
        """Re-apply the recorded changes due before this step; returns the next one's step."""
        while self.scheduled and self.scheduled[0]["step"] == self.step:
            change = self.scheduled.pop(0)
            self.set_lr(change.get("new"))
        return self.scheduled[0]["step"] if self.scheduled else -1

    def stats(self, before: list[torch.Tensor]) -> None:
        """Parameter statistics (and the fit of 1-D regression) after this step."""
        self._stats_due = False
        self._last_stats_t = time.perf_counter()
        self._stats_step = self.step
        self.emit(ev.ParamStats(step=self.step, params=param_stats(self.p.model, before)))
        fit = fit_snapshot(self.p.model, self.p.data)
        if fit is not None:
            xs, ys, ps = fit
            self.emit(ev.FitSnapshot(step=self.step, x=tuple(xs), y=tuple(ys), y_pred=tuple(ps)))

    def tick(self, now: float) -> None:
        """Every log_every_s: the losses out, the log to its file; stats and last.pt if due."""
        self.flush_losses()
        self.writer.flush()
        if self.strategy.is_main and now - self._last_stats_t >= self.stats_every:
            self._stats_due = True
        # at an epoch's last step, end_epoch (next) writes last.pt once the epoch is closed:
        # a checkpoint before that would hold the epoch open and log it twice on resume
        epoch_ending = self.batch >= self.steps_per_epoch or self.step >= self.total_steps
        if not epoch_ending and self.strategy.timed_checkpoints and self.ckpt.due(now):
            self.save("last")

    def sync(self, now: float) -> None:
        """A collective point of a distributed run: a tick, then rank 0's commands (last.pt
        among them when it is due: every rank takes part in writing it)."""
        self.tick(now)
        epoch_ending = self.batch >= self.steps_per_epoch or self.step >= self.total_steps
        self.commands(checkpoint=not epoch_ending and self.ckpt.due(now))

    def end_epoch(self) -> None:
        """Epoch bookkeeping without a host sync, unless evaluation or a checkpoint is due."""
        self.epoch += 1
        self.batch = 0
        ckpt_due = self.ckpt.due(time.perf_counter(), epoch_end=True)
        if not self.strategy.timed_checkpoints:  # every rank must agree: no clock here
            ckpt_due = not self.ckpt.every
        self.recipe.end_epoch(self.epoch)
        if not self._eval_due():
            self.losses.end_epoch(self.epoch, self.step)
            if self.strategy.flush_at_epoch_end or self.recipe.plateau_on_train_loss:
                self.flush_losses()
            if self.recipe.plateau_on_train_loss:
                self.recipe.plateau_step(self.losses.last_epoch_loss)
            if ckpt_due:
                self.save("last")
            return
        self.flush_losses()
        if not self.strategy.is_main:
            if ckpt_due:
                self.save("last")  # its part: its RNG states, gathered to rank 0
            return
        val_loss, metrics = self.evaluate()
        best = self.best_val_loss
        self.best_val_loss = val_loss if best is None else min(val_loss, best)
        self.last_metrics = metrics
        mean = self.losses.close_epoch()
        shown = {**metrics, **self.recipe.epoch_metrics(self.epoch)}
        self._epoch_event(self.epoch, self.step, mean, val_loss, shown)
        self.recipe.plateau_step(val_loss)
        stop = self.early.update(val_loss, metrics)
        if self.ckpt.improves(self.early.score(val_loss, metrics)):
            self.save("best")
        if stop:
            raise _Stop("finished")  # _finish writes last.pt, with best.pt's weights
        if ckpt_due:
            self.save("last")

    def flush_losses(self) -> None:
        """Fetch the pending losses (one host sync) and emit them, then the epochs that ended
        among them (their mean is only known now). A non-finite loss raises Diverged."""
        flushed = self.losses.flush()
        if flushed is None:
            return
        if flushed.losses:
            now = time.perf_counter()
            steps_per_s = (self.step - self._segment_step) / max(now - self._segment_start, 1e-9)
            last = flushed.first_step + len(flushed.losses) - 1
            lrs = self.recipe.take_lrs(len(flushed.losses))
            self.emit(
                ev.StepMetrics(
                    first_step=flushed.first_step,
                    epoch=self.epoch_of(last),  # the epoch of its last step: one truth
                    losses=tuple(flushed.losses),
                    lr=lrs[-1] if lrs else self.lr(),
                    elapsed_s=self.elapsed(now),
                    samples_per_s=steps_per_s * self.global_batch,
                    steps_per_s=steps_per_s,
                    lrs=lrs,
                )
            )
        for epoch, step, mean in flushed.epochs:
            self._epoch_event(epoch, step, mean, None, self.recipe.epoch_metrics(epoch))
        if flushed.diverged is not None:
            raise flushed.diverged

    def save(self, kind: str) -> None:
        """Write last.pt or best.pt (last.pt may bring best.pt along: Checkpointer.write).
        A distributed run gathers every rank's RNG states for last.pt (every rank calls)."""
        ranks = self.strategy.rank_states(self.p.data) if kind == "last" else None
        if not self.strategy.is_main:
            return
        self.flush_losses()
        # every event up to this checkpoint reaches the file first: a kill after the
        # checkpoint must not lose steps that a resume will not log again
        self.writer.flush()
        position = {"step": self.step, "epoch": self.epoch, "batch": self.batch}
        progress = {
            "active_s": self.elapsed(),
            "best_val_loss": self.best_val_loss,
            "last_epoch_loss": self.losses.last_epoch_loss,
            "final_loss": self.losses.final_loss,
            "metrics": dict(self.last_metrics),
        }
        position.update(self.losses.state())
        position["recipe"] = self.recipe.state()  # schedule, scaler, early stop, accumulation
        payload = self.ckpt.payload(position, progress, self.writer.changes, self.scheduled)
        if ranks is not None:
            payload["rng"]["ranks"] = ranks
        self.ckpt.write(kind, payload, self._saved)

    def _saved(self, kind: str, path: Path) -> None:
        self.emit(ev.CheckpointSaved(step=self.step, epoch=self.epoch, kind=kind, path=str(path)))

    # --- commands ---------------------------------------------------------------------------
    def _apply(self, command: str, value: Any) -> None:
        if command == "stop":
            raise _Stop
        if command == "set_lr":
            self.set_lr(value)
        elif command == "checkpoint":
            self.save("last")
        elif command == "pause":
            self.pause()

    def set_lr(self, value: Any) -> None:
        """A live lr change, checked like --set optim.lr: a bad value is a warning, ignored."""
        problem = lr_problem(value)
        if problem:
            message = f"set_lr {value!r}: ignored: {problem}"
            self.emit(ev.RunWarning(step=self.step, message=message))
            return
        value = float(value)
        self.flush_losses()  # the losses so far were made with the old rate
        old = self.lr()
        self.recipe.scale_lr(old, value)  # a schedule goes on from the new rate
        for group in self.p.optimizer.param_groups:
            group["lr"] = value
        self.emit(ev.HparamChanged(step=self.step, key="optim.lr", old=old, new=value))

    def pause(self) -> None:
        """Checkpoint, then wait for resume or stop, applying lr changes meanwhile. On ranks
        other than 0 the writes and events are no-ops (NullRunDir, no sinks)."""
        self.flush_losses()
        self._active_s, self._paused = self.elapsed(), True
        self.save("last")
        self.emit(ev.Paused(step=self.step))
        self.writer.flush()
        while True:
            command, value = self.strategy.wait_command(self.control)
            if command == "resume":
                break
            if command not in ("pause", "keepalive"):
                self._apply(command, value)
        self._segment_start, self._segment_step = time.perf_counter(), self.step
        self._paused = False
        self.emit(ev.Resumed(step=self.step))

    # --- start and end ----------------------------------------------------------------------
    def _start(self) -> None:
        model = self.p.model
        self.emit(self._started_event())
        n_params = sum(t.numel() for t in model.parameters())
        if self.resumed_from is None and n_params <= INITIAL_SNAPSHOT_MAX:
            self._initial = snapshot(model)
        model.train()
        now = time.perf_counter()
        self._segment_start, self._segment_step = now, self.step
        self.ckpt.last_t = now
        self.scheduled = [c for c in self.scheduled if c["step"] >= self.step]

    def _finish(self, status: str) -> ev.Event:
        self.flush_losses()
        if self.early.reason:  # stopped early: the model ends as best.pt holds it
            self.ckpt.load_best_weights()
        if self.strategy.is_main and self._stats_step != self.step:
            self.stats(None)  # the parameters as the run ends (no update ratio: no step to compare)
        self.save("last")
        summary = self.summary()
        try:
            report = report_values(self.p)
        except Exception as err:  # a [report] line is not the run: warn, the run finished
            report = {}
            message = f"[report]: {one_line(err)}"
            summary["report_error"] = message
            self.emit(ev.RunWarning(step=self.step, message=message))
        if report:
            summary["report"] = report
        warning = nothing_learned_message(self.p, self._initial) if self.step else None
        if warning:
            summary["learned"] = False
            summary["warning"] = warning
            self.emit(ev.RunWarning(step=self.step, message=warning))
        return self._end(ev.Finished(status=status, step=self.step, summary=summary))

    def _diverged(self, d: Diverged) -> ev.Event:
        """Stop with status diverged; last.pt and best.pt keep the last finite weights."""
        self.losses.discard()
        self.recipe.discard()
        bad = [n for n in nonfinite_params(self.p.model) if n not in d.what]
        reason = f"diverged at step {d.step}: {d.what}"
        if bad:
            reason += f"; non-finite parameters now: {', '.join(bad)}"
        if self.p.run.last_ckpt.exists():
            reason += "; last.pt holds the last finite weights"
        # one truth for the counters: the step that diverged and the epoch it belongs to
        # (the loop may have run ahead of the last loss fetch)
        summary = {
            **self.summary(step=d.step),
            "diverged_step": d.step,
            "diverged_epoch": self.epoch_of(d.step),
            "reason": reason,
        }
        self.emit(ev.RunWarning(step=d.step, message=reason))
        return self._end(ev.Finished(status="diverged", step=d.step, summary=summary))

    def _failed(self, err: BaseException) -> ev.Event:
        reason = one_line(err)
        try:
            self.flush_losses()
        except Exception:  # the device (or the disk) may be unusable after the failure
            self.losses.discard()
        summary = {**self.summary(), "reason": reason}
        event = ev.Failed(step=self.step, reason=reason, summary=summary)
        self.writer.failed(event)  # as much of it as can still be written
        for sink in self.sinks:
            sink(event)
        return event

    def _end(self, event: ev.Event) -> ev.Event:
        self.emit(event)  # the writer records the final status and summary in run.toml
        return event

    # --- events and measures ----------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        self.writer(event)
        for sink in self.sinks:
            sink(event)

    def _epoch_event(
        self, epoch: int, step: int, train_loss: float, val_loss: float | None, metrics: dict
    ) -> None:
        self.emit(
            ev.EpochEnd(
                epoch=epoch, step=step, train_loss=train_loss, val_loss=val_loss, metrics=metrics
            )
        )

    def _eval_due(self) -> bool:
        cfg = self.eval_cfg
        return cfg is not None and (
            self.epoch % cfg["every_epochs"] == 0 or self.epoch == self.total_epochs
        )

    def evaluate(self) -> tuple[float, dict[str, float]]:
        """Mean loss per sample on the test split, and accuracy for classification."""
        return evaluate(self.p, self.eval_cfg["batch_size"])

    def lr(self) -> float:
        return float(self.p.optimizer.param_groups[0]["lr"])

    def elapsed(self, now: float | None = None) -> float:
        """Training time so far, pauses excluded."""
        if self._paused:
            return self._active_s
        return self._active_s + ((now or time.perf_counter()) - self._segment_start)

    def epoch_of(self, step: int) -> int:
        """The epoch (1-based) that step `step` (1-based) belongs to."""
        return min(max(step - 1, 0) // self.steps_per_epoch + 1, self.total_epochs)

    def summary(self, step: int | None = None) -> dict[str, Any]:
        """`step`: where the run ended, if not at self.step (a divergence found later)."""
        elapsed = self.elapsed()
        steps = self.step if step is None else step
        epochs = self.epoch if step is None else (step - 1) // self.steps_per_epoch
        out: dict[str, Any] = {
            "final_loss": self.losses.final_loss,
            "epoch_loss": self.losses.last_epoch_loss,
            "best_val_loss": self.best_val_loss,
            "steps": steps,
            "epochs": epochs,
            "duration_s": round(elapsed, 3),
            "samples_per_s": round(steps * self.global_batch / max(elapsed, 1e-9), 1),
        }
        if "accuracy" in self.last_metrics:
            out["test_accuracy"] = self.last_metrics["accuracy"]
        out.update(self.recipe.summary())
        return {k: v for k, v in out.items() if v is not None}

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimiser, position, RNG streams, bookkeeping."""
        progress = self.ckpt.restore(ckpt)
        self.notice = self.strategy.restored(ckpt)  # per-rank RNG; a changed world said
        self.step, self.epoch, self.batch = ckpt["step"], ckpt["epoch"], ckpt["batch"]
        self.losses.restore(self.step, ckpt["epoch_loss_sum"], ckpt["epoch_loss_count"], progress)
        self.recipe.load_state(ckpt.get("recipe"))
        self.writer.changes = list(ckpt.get("changes", []))
        self.scheduled = list(ckpt.get("scheduled", []))
        self._active_s = progress.get("active_s", 0.0)
        self.best_val_loss = progress.get("best_val_loss")
        self.last_metrics = dict(progress.get("metrics", {}))
        self.resumed_from = self.step

    def _started_event(self) -> ev.RunStarted:
        p = self.p
        return ev.RunStarted(
            run_id=p.run.id,
            preset=p.config["name"],
            run_dir=str(p.run.path),
            device=str(p.device),
            task=p.config["task"],
            total_steps=self.total_steps,
            total_epochs=self.total_epochs,
            steps_per_epoch=self.steps_per_epoch,
            batch_size=self.global_batch,
            start_step=self.step,
            start_epoch=self.epoch,
            lr=self.lr(),
            config=p.config,
            param_shapes={n: list(t.shape) for n, t in p.model.named_parameters()},
            data=getattr(p.data, "summary", "") or getattr(p.data, "path", ""),
        )
