"""Optimisers by preset name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def build_optimizer(
    params: Iterable[torch.nn.Parameter], optim: dict[str, Any]
) -> torch.optim.Optimizer:
    name = optim["name"]
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=optim["lr"],
            momentum=optim["momentum"],
            dampening=optim["dampening"],
            weight_decay=optim["weight_decay"],
            nesterov=optim["nesterov"],
        )
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return cls(
        params,
        lr=optim["lr"],
        betas=tuple(optim["betas"]),
        eps=optim["eps"],
        weight_decay=optim["weight_decay"],
    )
