"""Loss functions by preset name. The seeds differ in sum vs mean and in halving."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of squared errors over batch and outputs (torch's MSELoss)."""
    return F.mse_loss(out, y)


def sse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors."""
    return F.mse_loss(out, y, reduction="sum")


def half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of (y_hat - y)^2 / 2: a summed half-squared loss with the update divided by batch."""
    return 0.5 * F.mse_loss(out, y)


def half_sse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of (y_hat - y)^2 / 2: its gradient is the plain sum of residuals."""
    return 0.5 * F.mse_loss(out, y, reduction="sum")


def l1(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(out, y)


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y)


LOSSES: dict[str, LossFn] = {
    "mse": mse,
    "sse": sse,
    "half_mse": half_mse,
    "half_sse": half_sse,
    "l1": l1,
    "cross_entropy": cross_entropy,
}
