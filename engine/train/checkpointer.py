"""The checkpointer: last.pt and best.pt, their payload, the best-metric rule, the guard
that never writes non-finite weights, and the way back (restore).

The best rule: with evaluation, best.pt follows the lowest test loss; without, the lowest
epoch training loss among the moments last.pt is written (no extra sync per epoch for it).
Files are written atomically (engine/checkpoint.py: temp file, fsync, os.replace).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from engine.train.losses import Diverged


def nonfinite_params(model: nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or an infinity (one host transfer)."""
    named = list(model.named_parameters())
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]


class Checkpointer:
    """Writes a run's checkpoints; `every` is checkpoint_every_s (0: at every epoch end)."""

    def __init__(self, prep: Any, every: float, best_by_eval: bool) -> None:
        self.p = prep
        self.every = every
        self.best_by_eval = best_by_eval
        self.best: float | None = None  # the metric best.pt holds
        self.last_t = 0.0  # when last.pt was written (perf_counter)

    def paths(self) -> dict[str, Path]:
        return {"last": self.p.run.last_ckpt, "best": self.p.run.best_ckpt}

    def due(self, now: float, epoch_end: bool = False) -> bool:
        """Whether last.pt is due: `every` seconds passed (or, at an epoch end, every = 0)."""
        if not self.every:
            return epoch_end
        return now - self.last_t >= self.every

    def improves(self, metric: float) -> bool:
        """Whether `metric` (a test loss) beats the best so far; it becomes the best if so."""
        if metric != metric or metric in (math.inf, -math.inf):
            return False
        if self.best is None or metric < self.best:
            self.best = metric
            return True
        return False

    def payload(
        self,
        position: dict[str, Any],
        progress: dict[str, Any],
        changes: list[dict[str, Any]],
        scheduled: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Everything a resume needs; raises Diverged rather than hold non-finite weights.

        `position`: step, epoch, batch and the loss buffer's epoch sums; `progress`: the
        bookkeeping a summary needs."""
        bad = nonfinite_params(self.p.model)
        if bad:
            raise Diverged(position["step"], f"non-finite values in {', '.join(bad)}")
        p = self.p
        return {
            "model": p.model.state_dict(),
            "optimizer": p.optimizer.state_dict(),
            **position,
            "rng": rng_state(p.data.state()),
            "config": copy.deepcopy(p.config),
            "changes": copy.deepcopy(changes),
            "scheduled": copy.deepcopy(scheduled),
            "progress": {**progress, "best": self.best},
        }

    def write(self, kind: str, payload: dict[str, Any], saved: Callable[[str, Path], None]) -> None:
        """Write `kind` (last or best), then call `saved(kind, path)`. With last, best.pt
        follows where the rule is the epoch loss and it improved (the same payload)."""
        path = self.paths()[kind]
        epoch_loss = payload["progress"]["last_epoch_loss"]
        better = (
            kind == "last"
            and not self.best_by_eval
            and isinstance(epoch_loss, float)
            and self.improves(epoch_loss)
        )
        # the best so far travels in every checkpoint (last.pt too), decided before the
        # write: a resumed session compares against it, never against nothing
        payload["progress"]["best"] = self.best
        save_checkpoint(path, payload)
        saved(kind, path)
        if kind != "last":
            return
        self.last_t = time.perf_counter()
        if better:
            save_checkpoint(self.p.run.best_ckpt, payload)
            saved("best", self.p.run.best_ckpt)

    def load_best_weights(self) -> None:
        """Put best.pt's weights back into the model (early stopping ends on them)."""
        path = self.p.run.best_ckpt
        if path.exists():
            self.p.model.load_state_dict(load_checkpoint(path)["model"])

    def restore(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        """Weights, optimiser, data and RNG streams from a checkpoint; returns its progress."""
        p = self.p
        p.model.load_state_dict(ckpt["model"])
        p.optimizer.load_state_dict(ckpt["optimizer"])
        progress = ckpt.get("progress", {})
        self.best = progress.get("best")
        p.data.load_state(ckpt["rng"].get("data", {}))
        restore_rng(ckpt["rng"])
        return progress
