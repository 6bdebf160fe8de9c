"""The learning-rate schedule of a run ([schedule]), built from torch.optim.lr_scheduler.

    constant     the optimiser's lr (no scheduler at all, unless there is a warm-up)
    step         StepLR(step_size, gamma); step_size 0: an epoch's optimizer steps
    exponential  ExponentialLR(gamma)
    cosine       CosineAnnealingLR(T_max = the run's optimizer steps after warm-up, min_lr)
    onecycle     OneCycleLR(max_lr or optim.lr, total_steps = the run's optimizer steps,
                 pct_start): its own warm-up
    plateau      ReduceLROnPlateau(factor, patience, min_lr), stepped per evaluation on the
                 test loss, or per epoch on the epoch's training loss without [eval]

`warmup_steps` puts LinearLR (from lr/(warmup_steps+1) up to lr) in front of the schedule
with SequentialLR. Every scheduler but plateau steps after each optimizer step.

A live lr change (`scale`) multiplies the schedule from that step on: the schedulers'
base rates and the optimiser's rates, so a replay that re-applies the change at its step
is the same run, bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import lr_scheduler as sched

PER_STEP = ("step", "exponential", "cosine", "onecycle")


def optimizer_steps(total_steps: int, steps_per_epoch: int, accumulate: int) -> int:
    """Optimizer steps in a run of `total_steps` batches: every `accumulate` batches, and at
    each epoch's last batch."""
    full, rest = divmod(total_steps, steps_per_epoch)
    return full * math.ceil(steps_per_epoch / accumulate) + math.ceil(rest / accumulate)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any] | None, total: int, per_epoch: int = 1
) -> sched.LRScheduler | None:
    """The per-step scheduler for `cfg` ([schedule], None: none), over `total` optimizer
    steps (`per_epoch` of them an epoch); None where the rate stays put between steps
    (constant, plateau)."""
    if cfg is None or cfg["name"] == "plateau":
        return None
    name, warmup = cfg["name"], cfg["warmup_steps"]
    if name == "onecycle":
        lr = optimizer.param_groups[0]["lr"]
        return sched.OneCycleLR(
            optimizer, max_lr=cfg["max_lr"] or lr, total_steps=max(total, 1),
            pct_start=cfg["pct_start"],
        )  # fmt: skip
    main: sched.LRScheduler | None = None
    if name == "step":
        size = cfg["step_size"] or per_epoch
        main = sched.StepLR(optimizer, step_size=size, gamma=cfg["gamma"])
    elif name == "exponential":
        main = sched.ExponentialLR(optimizer, gamma=cfg["gamma"])
    elif name == "cosine":
        t_max = max(total - warmup, 1)
        main = sched.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=cfg["min_lr"])
    if not warmup:
        return main
    warm = sched.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    if main is None:
        return warm
    return sched.SequentialLR(optimizer, [warm, main], milestones=[warmup])


def build_plateau(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any] | None
) -> sched.ReduceLROnPlateau | None:
    if cfg is None or cfg["name"] != "plateau":
        return None
    return sched.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg["factor"], patience=cfg["patience"],
        min_lr=cfg["min_lr"],
    )  # fmt: skip


def scale(optimizer: torch.optim.Optimizer, scheduler: Any, factor: float) -> None:
    """Multiply the schedule by `factor` from now on (a live lr change): the schedulers'
    base rates, OneCycle's rates and the optimiser groups' initial rates. The caller sets
    the groups' current rate."""
    if scheduler is None or factor == 1.0:
        return
    chain = [scheduler, *getattr(scheduler, "_schedulers", [])]
    for s in chain:
        if hasattr(s, "base_lrs"):
            s.base_lrs = [b * factor for b in s.base_lrs]
    for group in optimizer.param_groups:
        for key in ("initial_lr", "max_lr", "min_lr"):
            if key in group:
                group[key] = group[key] * factor
