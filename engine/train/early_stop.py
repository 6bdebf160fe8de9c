"""Early stopping ([early_stop]): the run ends when the watched metric (the test loss, or the
accuracy) has not improved by `min_delta` for `patience` evaluations in a row, saying why;
the loop then puts best.pt's weights back into the model.

Its state (best, evaluations without improvement, the reason once it triggered) travels in
every checkpoint, so a resumed run stops where the uninterrupted one would."""

from __future__ import annotations

import math
from typing import Any


class EarlyStop:
    def __init__(self, cfg: dict[str, Any] | None) -> None:
        self.cfg = cfg
        self.best: float | None = None
        self.bad = 0  # evaluations since the last improvement
        self.reason = ""

    @property
    def on(self) -> bool:
        return self.cfg is not None

    @property
    def metric(self) -> str:
        return self.cfg["metric"] if self.cfg else "val_loss"

    def score(self, val_loss: float, metrics: dict[str, float]) -> float:
        """What best.pt follows, lower is better: the test loss, or minus the accuracy when
        early stopping watches the accuracy."""
        if self.metric == "accuracy" and "accuracy" in metrics:
            return -float(metrics["accuracy"])
        return val_loss

    def update(self, val_loss: float, metrics: dict[str, float]) -> str:
        """Count one evaluation; returns the reason to stop now, or ''."""
        if self.cfg is None:
            return ""
        value = -self.score(val_loss, metrics) if self.metric == "accuracy" else val_loss
        if not math.isfinite(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.metric == "accuracy":
            improved = value > self.best + self.cfg["min_delta"]
        else:
            improved = value < self.best - self.cfg["min_delta"]
        if improved:
            self.best, self.bad = value, 0
            return ""
        self.bad += 1
        if self.bad < self.cfg["patience"]:
            return ""
        self.reason = (
            f"stopped early: {self.metric} did not improve by {self.cfg['min_delta']:g} "
            f"for {self.bad} evaluation{'s' if self.bad > 1 else ''}"
        )
        return self.reason

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bad": self.bad, "reason": self.reason}
        if self.best is not None:
            out["best"] = self.best
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.bad = int(state.get("bad", 0))
        self.reason = str(state.get("reason", ""))
