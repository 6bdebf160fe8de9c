"""Models for the distributed tests, named by presets as `tests.dist_models:NAME`."""

from __future__ import annotations

import os
import time

from torch import nn


class SlowOnRank(nn.Module):
    """A small digits CNN whose training forward sleeps `sleep_s` on rank `rank` only: a
    straggler on purpose."""

    def __init__(self, sleep_s: float, rank: int) -> None:
        super().__init__()
        self.slow = os.environ.get("RANK") == str(rank)
        self.sleep_s = sleep_s
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(128, 10),
        )  # fmt: skip

    def forward(self, x):
        if self.slow and self.training:
            time.sleep(self.sleep_s)
        return self.net(x)


def slow_on_rank(sleep_s: float = 0.03, rank: int = 1) -> nn.Module:
    return SlowOnRank(sleep_s, rank)
