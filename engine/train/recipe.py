"""The recipe of a step: what `Trainer._loop` calls once per batch, `loss = recipe.step(x, y)`.

With every recipe key at its default (no schedule, no clipping, no accumulation, fp32, no
channels-last) the step is the plain one: forward, loss, zero_grad, backward, optimizer
step, and the loss back, still on the device. Otherwise it is `Recipe._step`:

    autocast         train.precision bf16 / fp16: the forward under torch.autocast, the
                     loss in fp32; fp16 scales the loss with torch.amp.GradScaler (CUDA only)
    accumulation     train.accumulate = k: the loss is divided by k, the optimizer steps
                     every k batches and at each epoch's last batch (a step still counts
                     batches); under DDP the gradients are all-reduced once per cycle
    clipping         train.clip_grad_norm: clip_grad_norm_ before the optimizer step; the
                     clipped steps are counted on the device (no host sync) and reported as
                     the epoch's `clipped` fraction when its losses are fetched
    schedule         the per-step scheduler steps after each optimizer step; the rate each
                     batch used is kept on the host (a float per step) and goes out with the
                     losses (StepMetrics.lrs), so the log holds the exact rate of every step
    channels_last    4-D inputs in channels-last memory format (the model converted once)
    compile          torch.compile of what the loop calls (any step kind)

Everything a resume needs (scheduler, plateau, scaler, early stop, the accumulated
gradients of a cycle cut by a checkpoint, the clip counters) is `state()`, plain values
and tensors that torch.load(weights_only=True) reads.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from typing import Any

import torch

from engine.errors import ConfigError
from engine.train import schedule as schedules
from engine.train.early_stop import EarlyStop

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_recipe(config: dict[str, Any], device: torch.device, data: Any, model: Any) -> None:
    """What the schema cannot know: the device, the data's shape, the compiler. Raises
    ConfigError (one line, before any run folder exists)."""
    train = config["train"]
    precision = train["precision"]
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"[train] precision: fp16 (with GradScaler) needs a CUDA device, not {device.type}; "
            "use bf16 there"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"[train] precision: bf16 is not supported on {device}; use fp16")
    if train["channels_last"] and data.x.dim() != 4:
        raise ConfigError(
            f"[train] channels_last: needs 4-D inputs (images), these are {data.x.dim()}-D"
        )
    if train["compile"]:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            raise ConfigError("[train] compile: torch.compile is not supported on this Python")
        if device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
            raise ConfigError(
                "[train] compile: torch.compile on CPU needs a C++ compiler (g++ or clang); "
                "install one or set train.compile = false"
            )
    if precision != "fp32":
        x = data.x[:2]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.autocast(device.type, dtype=AUTOCAST[precision]):
                model(x)
        except (RuntimeError, TypeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"[train] precision: {precision} fails on this model: {first}"
            ) from None
        finally:
            model.train(was_training)


def prepare_model(model: torch.nn.Module, config: dict[str, Any]) -> torch.nn.Module:
    """The model in channels-last format where asked (before the optimiser sees it)."""
    if config["train"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model


class Recipe:
    """The step of one run; `trainer` is the Trainer (its position decides the end of an
    accumulation cycle)."""

    def __init__(self, trainer: Any) -> None:
        p = trainer.p
        train = p.config["train"]
        self.trainer = trainer
        self.optimizer = opt = p.optimizer
        self.loss_fn = p.loss_fn
        self.params = [q for g in opt.param_groups for q in g["params"]]
        self.k = train.get("accumulate", 1)
        self.clip = float(train.get("clip_grad_norm", 0.0))
        self.channels_last = train.get("channels_last", False)
        precision = train.get("precision", "fp32")
        device = p.device
        self.autocast: Any = contextlib.nullcontext()
        if precision != "fp32":
            self.autocast = torch.autocast(device.type, dtype=AUTOCAST[precision])
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        if self.scaler is not None:  # a skipped first step is the scaler's business
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        cfg = p.config.get("schedule")
        total = schedules.optimizer_steps(trainer.total_steps, trainer.steps_per_epoch, self.k)
        per_epoch = schedules.optimizer_steps(
            trainer.steps_per_epoch, trainer.steps_per_epoch, self.k
        )
        self.scheduler = schedules.build_scheduler(opt, cfg, total, per_epoch)
        self.plateau = schedules.build_plateau(opt, cfg)
        self.plateau_on_train_loss = self.plateau is not None and trainer.eval_cfg is None
        self.early = EarlyStop(p.config.get("early_stop"))
        if trainer.strategy.sync_every and (
            self.early.on or self.plateau is not None and not self.plateau_on_train_loss
        ):
            # only rank 0 evaluates: the other ranks would neither stop nor decay with it
            raise ConfigError(
                "[early_stop] and [schedule] plateau are not supported with --nproc yet"
            )
        self.lrs: list[float] | None = [] if self.scheduler is not None else None
        self.group = opt.param_groups[0]
        self.micro = 0  # batches in the current accumulation cycle
        # clipped optimizer steps: on the device for the current epoch; per ended epoch
        # (epoch, count tensor, optimizer steps) until the losses are fetched
        self.clipped = torch.zeros((), dtype=torch.int64, device=device) if self.clip else None
        self.epoch_opt_steps = 0
        self.ended: list[tuple[int, Any, int]] = []
        self.total_clipped = 0
        self.total_opt_steps = 0
        self.model = trainer.strategy.model
        self.lower = precision != "fp32"
        self.no_sync = getattr(self.model, "no_sync", None) if self.k > 1 else None
        if train.get("compile"):
            self.model = torch.compile(self.model)
        self.plain = (
            self.k == 1 and not self.clip and precision == "fp32" and self.scheduler is None
            and not self.channels_last
        )  # fmt: skip
        self.step = self._plain_step() if self.plain else self._step
        if train.get("compile"):
            self.step = self._first_compiled(self.step)

    # --- the steps --------------------------------------------------------------------------
    def _plain_step(self):
        model, loss_fn, opt = self.model, self.loss_fn, self.optimizer

        def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()  # stays on the device: no host sync per step

        return step

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.lrs is not None:
            self.lrs.append(self.group["lr"])  # the rate this batch's update uses
        with self.autocast:
            out = self.model(x)
        loss = self.loss_fn(out.float() if self.lower else out, y)  # the loss in fp32
        if self.micro == 0:
            self.optimizer.zero_grad(set_to_none=True)
        self.micro += 1
        t = self.trainer
        last = (
            self.micro >= self.k or t.batch + 1 >= t.steps_per_epoch or t.step + 1 >= t.total_steps
        )
        back = loss / self.k if self.k > 1 else loss
        if self.scaler is not None:
            back = self.scaler.scale(back)
        if last or self.no_sync is None:
            back.backward()
        else:  # DDP: gradients all-reduced once per cycle, at its last batch
            with self.no_sync():
                back.backward()
        if last:
            self.micro = 0
            self._optimizer_step()
        return loss.detach()

    def _optimizer_step(self) -> None:
        opt, scaler = self.optimizer, self.scaler
        if self.clip:
            if scaler is not None:
                scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.clipped += norm.to(self.clipped.device) > self.clip  # on the device
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        self.epoch_opt_steps += 1
        if self.scheduler is not None:
            self.scheduler.step()

    def _first_compiled(self, step: Any) -> Any:
        """The step, with torch.compile's failure (it comes at the first call) as one line."""
        state = {"first": True}

        def compiled(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if not state["first"]:
                return step(x, y)
            try:
                out = step(x, y)
            except Exception as err:
                text = str(err).strip()
                first = text.splitlines()[0] if text else type(err).__name__
                raise RuntimeError(
                    f"train.compile: torch.compile failed on this machine ({first[:300]}); "
                    "set train.compile = false"
                ) from None
            state["first"] = False
            return out

        return compiled

    # --- the loop's other moments -----------------------------------------------------------
    def take_lrs(self, n: int) -> tuple[float, ...]:
        """The rates of the next `n` logged steps (a flush), or () without a schedule."""
        if self.lrs is None:
            return ()
        out = tuple(self.lrs[:n])
        del self.lrs[:n]
        return out

    def discard(self) -> None:
        if self.lrs is not None:
            self.lrs.clear()

    def scale_lr(self, old: float, new: float) -> None:
        """A live lr change: the schedule from this step on is multiplied by new/old."""
        if old > 0:
            schedules.scale(self.optimizer, self.scheduler, new / old)

    def end_epoch(self, epoch: int) -> None:
        """The clip count of the epoch that just ended, kept on the device until a fetch."""
        if self.clipped is not None:
            self.ended.append((epoch, self.clipped.clone(), self.epoch_opt_steps))
            self.clipped.zero_()
        self.epoch_opt_steps = 0

    def epoch_metrics(self, epoch: int) -> dict[str, float]:
        """{'clipped': fraction of the epoch's optimizer steps clipped} once its losses are
        fetched (the fetch is a host sync anyway), or {}."""
        for i, (e, count, n) in enumerate(self.ended):
            if e == epoch:
                del self.ended[i]
                clipped = _count(count)
                self.total_clipped += clipped
                self.total_opt_steps += n
                return {"clipped": round(clipped / max(n, 1), 6)}
        return {}

    def plateau_step(self, metric: float | None) -> None:
        if self.plateau is not None and metric is not None:
            self.plateau.step(metric)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.clipped is not None:
            clipped = self.total_clipped + int(self.clipped.item())  # item-ok: run's end
            steps = self.total_opt_steps + self.epoch_opt_steps
            out["clipped_fraction"] = round(clipped / max(steps, 1), 6)
        if self.early.reason:
            out["stopped_early"] = self.early.reason
        return out

    # --- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"early_stop": self.early.state(), "micro": self.micro}
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.state_dict()
        if self.plateau is not None:
            out["plateau"] = self.plateau.state_dict()
        if self.scaler is not None:
            out["scaler"] = self.scaler.state_dict()
        if self.micro:  # a checkpoint inside an accumulation cycle keeps its gradients
            out["grads"] = [
                q.grad.detach().clone() if q.grad is not None else torch.empty(0)
                for q in self.params
            ]
        if self.clipped is not None:
            out["clip"] = {
                "epoch": int(self.clipped.item()),  # item-ok: at a checkpoint only
                "epoch_steps": self.epoch_opt_steps,
                "total": self.total_clipped,
                "total_steps": self.total_opt_steps,
                "ended": [[e, _count(c), n] for e, c, n in self.ended],
            }
        else:
            out["opt_steps"] = self.epoch_opt_steps
        return out

    def load_state(self, state: dict[str, Any] | None) -> None:
        """From a checkpoint (after the optimiser's state); an older one has none."""
        if not state:
            return
        self.early.load_state(state.get("early_stop", {}))
        self.micro = int(state.get("micro", 0))
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.plateau is not None and "plateau" in state:
            self.plateau.load_state_dict(state["plateau"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        for q, g in zip(self.params, state.get("grads", []), strict=False):
            q.grad = g.to(q.device).clone() if g.numel() else None
        clip = state.get("clip")
        if self.clipped is not None and clip:
            self.clipped.fill_(int(clip["epoch"]))
            self.epoch_opt_steps = int(clip["epoch_steps"])
            self.total_clipped = int(clip["total"])
            self.total_opt_steps = int(clip["total_steps"])
            self.ended = [(int(e), int(c), int(n)) for e, c, n in clip.get("ended", [])]
        else:
            self.epoch_opt_steps = int(state.get("opt_steps", 0))


def _count(value: Any) -> int:
    """A clip count: a device tensor (fetched: a host sync, at a fetch anyway) or an int."""
    return int(value.item()) if isinstance(value, torch.Tensor) else int(value)  # item-ok
