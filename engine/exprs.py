"""Evaluating the small expressions presets use for data formulas and [report] lines.

`engine.schema.check_expression` has already limited them to arithmetic, subscripts and
the names below, so evaluation runs with no builtins.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _as_tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=dtype)


def namespace(dtype: torch.dtype) -> dict[str, Any]:
    def arange(*args: float) -> torch.Tensor:
        return torch.arange(*args, dtype=dtype)

    def linspace(start: float, stop: float, num: int) -> torch.Tensor:
        return torch.linspace(start, stop, int(num), dtype=dtype)

    def unary(fn):
        return lambda v: fn(_as_tensor(v, dtype))

    ns: dict[str, Any] = {
        "arange": arange,
        "linspace": linspace,
        "where": lambda c, a, b: torch.where(c, _as_tensor(a, dtype), _as_tensor(b, dtype)),
        "clamp": lambda v, lo=None, hi=None: torch.clamp(_as_tensor(v, dtype), lo, hi),
        "pi": math.pi,
        "e": math.e,
    }
    for name in (
        "sin cos tan exp log sqrt abs relu tanh sigmoid zeros_like ones_like "
        "max min sum mean prod norm"
    ).split():
        ns[name] = unary(getattr(torch, name))
    return ns


def evaluate(text: str, names: dict[str, Any], dtype: torch.dtype = torch.float64) -> Any:
    env = namespace(dtype)
    env.update(names)
    return eval(compile(text, "<preset expression>", "eval"), {"__builtins__": {}}, env)
