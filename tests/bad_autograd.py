"""A model whose custom autograd Function has a wrong backward (for gradcheck tests):
Linear(1, 4) -> Cube (backward says 2x^2 instead of 3x^2) -> Linear(4, 1)."""

from typing import Any

import torch
from torch import nn


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(t)
        return t**3

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (t,) = ctx.saved_tensors
        return grad_output * 2 * t**2  # wrong on purpose: d(t^3)/dt = 3t^2


class CubeLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Cube.apply(x)


def make() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 4), CubeLayer(), nn.Linear(4, 1))
