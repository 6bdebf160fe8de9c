"""The training loop. It runs in whatever thread calls `Trainer.run` and talks to the world
only through events (to sinks) and commands (from a Control).

Per step it does the model's work plus a list append and a clock read: the step's loss stays
on the device and is fetched with all the others every `log_every_s` (one host sync).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from engine import events as ev
from engine.build import PreparedRun
from engine.checkpoint import restore_rng, rng_state, save_checkpoint
from engine.control import Control
from engine.diagnose import nothing_learned_message
from engine.exprs import evaluate
from engine.stats import param_stats, snapshot

Sink = Callable[[ev.Event], None]


class _Stop(Exception):
    pass


class _Diverged(Exception):
    def __init__(self, step: int, what: str) -> None:
        super().__init__(what)
        self.step = step
        self.what = what


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
        `dist`: an engine.procs.distributed.DistContext when this is one of several processes."""
        self.p = prep
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self.sinks = list(sinks)
        self.control = control or Control()
        cfg = prep.config
        train = cfg["train"]
        self.steps_per_epoch = prep.data.steps_per_epoch
        self.global_batch = getattr(prep.data, "global_batch", prep.data.batch_size)
        if train["steps"]:
            self.total_steps = train["steps"]
            self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        else:
            self.total_epochs = train["epochs"]
            self.total_steps = self.total_epochs * self.steps_per_epoch
        self.log_every = train["log_every_s"]
        self.stats_every = train["stats_every_s"]
        self.ckpt_every = train["checkpoint_every_s"]
        self.eval_cfg = cfg.get("eval")
        self.step = 0
        self.epoch = 0  # completed epochs
        self.batch = 0  # completed batches in the current epoch
        self.epoch_loss_sum = 0.0
        self.epoch_loss_count = 0
        self.last_epoch_loss: float | None = None
        self.final_loss: float | None = None
        self.best: float | None = None
        self.best_val_loss: float | None = None
        self.last_metrics: dict[str, float] = {}
        self.changes: list[dict[str, Any]] = []
        self._losses: list[torch.Tensor] = []
        self._ended: list[tuple[int, int]] = []  # (epoch, last step) not yet flushed
        self._flushed_step = 0
        self._stats_due = self.is_main
        self._active_s = 0.0
        self._segment_start = 0.0
        self._segment_step = 0
        self._last_ckpt_t = 0.0
        self._last_stats_t = 0.0
        self._initial: list[torch.Tensor] | None = None
        self.scheduled = sorted((dict(c) for c in scheduled), key=lambda c: c["step"])
        self.resumed_from: int | None = None

    # --- events ---------------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        self.p.run.append_event(event)
        for sink in self.sinks:
            sink(event)

    def lr(self) -> float:
        return float(self.p.optimizer.param_groups[0]["lr"])

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> ev.Event:
        """Train to the end (or until stopped); returns the Finished or Failed event."""
        try:
            return self._run()
        except Exception as err:  # any failure inside training ends the run as failed
            reason = f"{type(err).__name__}: {err}".strip().splitlines()[0]
            try:
                self._flush_losses()
            except Exception:  # the device may be unusable after the failure
                self._losses.clear()
            event = ev.Failed(step=self.step, reason=reason)
            summary = self.summary()
            summary["reason"] = reason
            self.p.run.update("failed", summary=summary)
            self.emit(event)
            return event
        finally:
            self.p.run.flush_events()
            self.p.run.close()

    def _run(self) -> ev.Event:
        model = self.p.model
        self.emit(self._started_event())
        if self.resumed_from is None and sum(t.numel() for t in model.parameters()) <= 10_000_000:
            self._initial = snapshot(model)
        model.train()
        now = time.perf_counter()
        self._segment_start, self._segment_step = now, self.step
        self._last_ckpt_t = now
        next_tick = now + self.log_every
        self._drop_past_schedule()
        try:
            return self._loop(next_tick)
        except _Diverged as diverged:
            return self._diverged(diverged)

    def _loop(self, next_tick: float) -> ev.Event:
        model, opt, loss_fn, data = self.p.model, self.p.optimizer, self.p.loss_fn, self.p.data
        if self.dist is not None:
            from engine.procs.distributed import SYNC_STEPS

            model = self.p.train_model  # the DDP wrapper; self.p.model stays unwrapped
            control = Control()  # commands arrive through _sync, on every rank at once
            sync_every, next_tick = SYNC_STEPS, math.inf
        else:
            control, sync_every = self.control, 0
        next_change = self.scheduled[0]["step"] if self.scheduled else -1
        status = "finished"
        try:
            while self.epoch < self.total_epochs and self.step < self.total_steps:
                for x, y in data.batches(self.epoch, self.batch):
                    if control.pending:
                        self._handle_commands()
                    if self.step == next_change:
                        next_change = self._apply_scheduled()
                    before = snapshot(model) if self._stats_due else None
                    out = model(x)
                    loss = loss_fn(out, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    self._losses.append(loss.detach())
                    self.step += 1
                    self.batch += 1
                    if before is not None:
                        self._emit_stats(before)
                    now = time.perf_counter()
                    if now >= next_tick:
                        self._tick(now)
                        next_tick = now + self.log_every
                    elif sync_every and self.step % sync_every == 0:
                        self._sync(now)
                    if self.step >= self.total_steps:
                        break
                if self.batch >= self.steps_per_epoch or self.step >= self.total_steps:
                    self._end_epoch()
        except _Stop:
            status = "stopped"
        self._flush_losses()
        return self._finish(status)

    def _drop_past_schedule(self) -> None:
        self.scheduled = [c for c in self.scheduled if c["step"] >= self.step]

    def _apply_scheduled(self) -> int:
        while self.scheduled and self.scheduled[0]["step"] == self.step:
            change = self.scheduled.pop(0)
            self._apply("set_lr", float(change["new"]))
        return self.scheduled[0]["step"] if self.scheduled else -1

    def _tick(self, now: float) -> None:
        self._flush_losses()
        self.p.run.flush_events()
        if self.is_main and now - self._last_stats_t >= self.stats_every:
            self._stats_due = True
        if self.ckpt_every and now - self._last_ckpt_t >= self.ckpt_every:
            self.save("last")

    def _sync(self, now: float) -> None:
        """A collective point of a distributed run: losses, then rank 0's commands."""
        self._tick(now)
        for command, value in self.dist.broadcast(self.control.drain() if self.is_main else None):
            self._apply(command, value)

    def _flush_losses(self) -> None:
        """Fetch the pending step losses (one host sync) and emit them, then the epochs that
        ended among them (their mean loss is only known now). A non-finite loss ends the run
        as diverged at its step."""
        if not self._losses:
            return
        stacked = torch.stack(self._losses)
        if self.dist is not None:
            stacked = self.dist.mean(stacked)
        values = stacked.tolist()  # the host sync, once per interval
        self._losses.clear()
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            diverged = _Diverged(self._flushed_step + bad + 1, f"the loss became {values[bad]}")
            values = values[:bad]
            self._ended = [e for e in self._ended if e[1] <= self._flushed_step + bad]
            if values:
                self._emit_losses(values)
            raise diverged
        self._emit_losses(values)

    def _emit_losses(self, values: list[float]) -> None:
        first = self._flushed_step + 1
        self._flushed_step += len(values)
        self.final_loss = values[-1]
        now = time.perf_counter()
        elapsed = self._active_s + (now - self._segment_start)
        steps_per_s = (self.step - self._segment_step) / max(now - self._segment_start, 1e-9)
        self.emit(
            ev.StepMetrics(
                first_step=first,
                epoch=min(self.epoch + 1, self.total_epochs),
                losses=tuple(values),
                lr=self.lr(),
                elapsed_s=elapsed,
                samples_per_s=steps_per_s * self.global_batch,
                steps_per_s=steps_per_s,
            )
        )
        pos = 0
        for epoch, end_step in self._ended:
            upto = end_step - first + 1
            self.epoch_loss_sum += sum(values[pos:upto])
            self.epoch_loss_count += upto - pos
            pos = upto
            self._close_epoch(epoch, end_step, None, {})
        self._ended.clear()
        self.epoch_loss_sum += sum(values[pos:])
        self.epoch_loss_count += len(values) - pos

    def _close_epoch(
        self, epoch: int, step: int, val_loss: float | None, metrics: dict[str, float]
    ) -> None:
        self.last_epoch_loss = self.epoch_loss_sum / max(self.epoch_loss_count, 1)
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
        self.emit(
            ev.EpochEnd(
                epoch=epoch,
                step=step,
                train_loss=self.last_epoch_loss,
                val_loss=val_loss,
                metrics=metrics,
            )
        )

    def _end_epoch(self) -> None:
        """Epoch bookkeeping without a host sync, unless evaluation or a checkpoint is due."""
        self.epoch += 1
        self.batch = 0
        eval_due = (
            self.eval_cfg is not None
            and self.p.data.x_test is not None
            and (self.epoch % self.eval_cfg["every_epochs"] == 0 or self.epoch == self.total_epochs)
        )
        ckpt_due = not self.ckpt_every or time.perf_counter() - self._last_ckpt_t >= self.ckpt_every
        if not eval_due:
            self._ended.append((self.epoch, self.step))
            if self.dist is not None:
                self._flush_losses()  # every rank at the same step: a safe collective point
            if ckpt_due:
                self.save("last")
            return
        self._flush_losses()
        if not self.is_main:
            return
        val_loss, metrics = self.evaluate()
        self.best_val_loss = (
            val_loss if self.best_val_loss is None else min(val_loss, self.best_val_loss)
        )
        self.last_metrics = metrics
        self._close_epoch(self.epoch, self.step, val_loss, metrics)
        if self.best is None or val_loss < self.best:
            self.best = val_loss
            self.save("best")
        if ckpt_due:
            self.save("last")

    def evaluate(self) -> tuple[float, dict[str, float]]:
        """Mean loss per sample on the test split, and accuracy for classification."""
        p = self.p
        x, y = p.data.x_test, p.data.y_test
        bs = self.eval_cfg["batch_size"]
        p.model.eval()
        total = x.new_zeros((), dtype=torch.float64)
        correct = x.new_zeros((), dtype=torch.int64)
        with torch.no_grad():
            for i in range(0, len(x), bs):
                out = p.model(x[i : i + bs])
                yb = y[i : i + bs]
                total += p.loss_fn(out, yb).double() * len(yb)
                if self.p.config["task"] == "classification":
                    correct += (out.argmax(dim=1) == yb).sum()
        p.model.train()
        total_f, correct_i = torch.stack([total, correct.double()]).tolist()
        metrics = {}
        if self.p.config["task"] == "classification":
            metrics["accuracy"] = correct_i / len(x)
        return total_f / len(x), metrics

    # --- commands ---------------------------------------------------------------------------
    def _handle_commands(self) -> None:
        for command, value in self.control.drain():
            self._apply(command, value)

    def _apply(self, command: str, value: Any) -> None:
        if command == "stop":
            raise _Stop
        if command == "set_lr":
            self._flush_losses()  # the losses so far were made with the old rate
            old = self.lr()
            for group in self.p.optimizer.param_groups:
                group["lr"] = value
            change = {"step": self.step, "key": "optim.lr", "old": old, "new": value}
            self.changes.append(change)
            self.p.run.update(changes=self.changes)
            self.emit(ev.HparamChanged(step=self.step, key="optim.lr", old=old, new=value))
        elif command == "pause":
            self._pause()

    def _pause(self) -> None:
        """Checkpoint, then wait for resume or stop, applying lr changes meanwhile. On ranks
        other than 0 the writes and events are no-ops (NullRunDir, no sinks)."""
        self._flush_losses()
        self._active_s += time.perf_counter() - self._segment_start
        self.save("last")
        self.p.run.update("paused")
        self.emit(ev.Paused(step=self.step))
        self.p.run.flush_events()
        while True:
            command, value = self._command_while_paused()
            if command == "resume":
                break
            if command not in ("pause", "keepalive"):
                self._apply(command, value)
        self._segment_start, self._segment_step = time.perf_counter(), self.step
        self.p.run.update("running")
        self.emit(ev.Resumed(step=self.step))

    def _command_while_paused(self) -> tuple[str, Any]:
        if self.dist is None:
            while (item := self.control.wait(timeout=0.5)) is None:
                pass
            return item
        # every rank waits in the broadcast; rank 0 relays its commands, and a keep-alive
        # every few seconds so no collective times out during a long pause
        item = (self.control.wait(timeout=5.0) or ("keepalive", None)) if self.is_main else None
        return self.dist.broadcast(item)

    # --- checkpoints and stats --------------------------------------------------------------
    def checkpoint_payload(self) -> dict[str, Any]:
        return {
            "model": self.p.model.state_dict(),
            "optimizer": self.p.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_count": self.epoch_loss_count,
            "rng": rng_state(self.p.data.state()),
            "config": copy.deepcopy(self.p.config),
            "changes": copy.deepcopy(self.changes),
            "scheduled": copy.deepcopy(self.scheduled),
            "progress": {
                "active_s": self._active_s + (time.perf_counter() - self._segment_start),
                "best": self.best,
                "best_val_loss": self.best_val_loss,
                "last_epoch_loss": self.last_epoch_loss,
                "final_loss": self.final_loss,
                "metrics": dict(self.last_metrics),
            },
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimiser, position, RNG streams, bookkeeping."""
        p = self.p
        p.model.load_state_dict(ckpt["model"])
        p.optimizer.load_state_dict(ckpt["optimizer"])
        self.step, self.epoch, self.batch = ckpt["step"], ckpt["epoch"], ckpt["batch"]
        self._flushed_step = self.step
        self.epoch_loss_sum = ckpt["epoch_loss_sum"]
        self.epoch_loss_count = ckpt["epoch_loss_count"]
        self.changes = list(ckpt.get("changes", []))
        self.scheduled = list(ckpt.get("scheduled", []))
        progress = ckpt.get("progress", {})
        self._active_s = progress.get("active_s", 0.0)
        self.best = progress.get("best")
        self.best_val_loss = progress.get("best_val_loss")
        self.last_epoch_loss = progress.get("last_epoch_loss")
        self.final_loss = progress.get("final_loss")
        self.last_metrics = dict(progress.get("metrics", {}))
        p.data.load_state(ckpt["rng"].get("data", {}))
        restore_rng(ckpt["rng"])
        self.resumed_from = self.step

    def save(self, kind: str) -> None:
        """Write last.pt or best.pt. Without evaluation, best.pt follows the lowest epoch loss
        seen at the moments last.pt is written (no extra sync per epoch for it)."""
        if not self.is_main:
            return
        self._flush_losses()
        # every event up to this checkpoint reaches the file first: a kill after the
        # checkpoint must not lose steps that a resume will not log again
        self.p.run.flush_events()
        self._check_finite_params()
        path = self.p.run.best_ckpt if kind == "best" else self.p.run.last_ckpt
        payload = self.checkpoint_payload()
        save_checkpoint(path, payload)
        self.emit(ev.CheckpointSaved(step=self.step, epoch=self.epoch, kind=kind, path=str(path)))
        if kind != "last":
            return
        self._last_ckpt_t = time.perf_counter()
        no_eval = self.eval_cfg is None or self.p.data.x_test is None
        epoch_loss = self.last_epoch_loss
        if no_eval and epoch_loss is not None and epoch_loss == epoch_loss:
            if self.best is None or epoch_loss < self.best:
                self.best = epoch_loss
                save_checkpoint(self.p.run.best_ckpt, payload)
                self.emit(
                    ev.CheckpointSaved(
                        step=self.step,
                        epoch=self.epoch,
                        kind="best",
                        path=str(self.p.run.best_ckpt),
                    )
                )

    def _nonfinite_params(self) -> list[str]:
        named = list(self.p.model.named_parameters())
        finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).tolist()
        return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]

    def _check_finite_params(self) -> None:
        bad = self._nonfinite_params()
        if bad:
            raise _Diverged(self.step, f"non-finite values in {', '.join(bad)}")

    def _diverged(self, d: _Diverged) -> ev.Event:
        """Stop with status diverged; last.pt and best.pt keep the last finite weights."""
        self._losses.clear()
        bad = [n for n in self._nonfinite_params() if n not in d.what]
        reason = f"diverged at step {d.step}: {d.what}"
        if bad:
            reason += f"; non-finite parameters now: {', '.join(bad)}"
        if self.p.run.last_ckpt.exists():
            reason += "; last.pt holds the last finite weights"
        summary = self.summary()
        summary.update(diverged_step=d.step, reason=reason)
        self.p.run.update("diverged", summary=summary)
        self.emit(ev.RunWarning(step=d.step, message=reason))
        event = ev.Finished(status="diverged", step=d.step, summary=summary)
        self.emit(event)
        return event

    def _emit_stats(self, before: list[torch.Tensor]) -> None:
        self._stats_due = False
        self._last_stats_t = time.perf_counter()
        self.emit(ev.ParamStats(step=self.step, params=param_stats(self.p.model, before)))
        data = self.p.data
        if getattr(data, "fit_1d", False):
            model = self.p.model
            model.eval()
            with torch.no_grad():
                pred = model(data.x)
            model.train()
            xs, ys, ps = torch.stack([data.x.flatten(), data.y.flatten(), pred.flatten()]).tolist()
            self.emit(ev.FitSnapshot(step=self.step, x=tuple(xs), y=tuple(ys), y_pred=tuple(ps)))

    # --- the end ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        elapsed = self._active_s + (time.perf_counter() - self._segment_start)
        out: dict[str, Any] = {
            "final_loss": self.final_loss,
            "epoch_loss": self.last_epoch_loss,
            "best_val_loss": self.best_val_loss,
            "steps": self.step,
            "epochs": self.epoch,
            "duration_s": round(elapsed, 3),
            "samples_per_s": round(self.step * self.global_batch / max(elapsed, 1e-9), 1),
        }
        if "accuracy" in self.last_metrics:
            out["test_accuracy"] = self.last_metrics["accuracy"]
        return {k: v for k, v in out.items() if v is not None}

    def _report(self) -> dict[str, Any]:
        lines = self.p.config.get("report") or {}
        if not lines:
            return {}
        params = {n: t.detach() for n, t in self.p.model.named_parameters()}
        data = self.p.data
        extras = {"x": data.x, "y": getattr(data, "y", None), **data.extras}
        out = {}
        for name, text in lines.items():
            value = evaluate(text, {"p": params, "d": extras})
            if isinstance(value, torch.Tensor):
                value = value.double().cpu()
                value = value.item() if value.numel() == 1 else value.flatten().tolist()  # item-ok
            out[name] = value
        return out

    def _finish(self, status: str) -> ev.Event:
        self.save("last")
        summary = self.summary()
        report = self._report()
        if report:
            summary["report"] = report
        warning = nothing_learned_message(self.p, self._initial) if self.step else None
        if warning:
            summary["learned"] = False
            summary["warning"] = warning
            self.emit(ev.RunWarning(step=self.step, message=warning))
        if self.changes:
            self.p.run.meta["changes"] = self.changes
        self.p.run.update(status, summary=summary)
        event = ev.Finished(status=status, step=self.step, summary=summary)
        self.emit(event)
        return event

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
        )
