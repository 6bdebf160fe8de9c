"""Models from a preset's [model]: a layer list with init rules, a named built-in, or user code."""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigError
from engine.user_code import import_user_module


class LegendreP3(torch.autograd.Function):
    """P3(t) = (5t^3 - 3t) / 2 with its derivative written by hand: 1.5 (5t^2 - 1)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(t)
        return 0.5 * (5 * t**3 - 3 * t)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (t,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * t**2 - 1)


class LegendreModel(nn.Module):
    """y = a + b * P3(c + d x), the four scalars starting at a=0, b=-1, c=0, d=0.3."""

    def __init__(self, a: float = 0.0, b: float = -1.0, c: float = 0.0, d: float = 0.3) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))
        self.c = nn.Parameter(torch.tensor(c))
        self.d = nn.Parameter(torch.tensor(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a + self.b * LegendreP3.apply(self.c + self.d * x)


BUILTINS = {"legendre-p3": LegendreModel}


def build_model(model_cfg: dict[str, Any]) -> nn.Module:
    """Build the module and apply the init rules; the caller has seeded torch already."""
    if model_cfg["layers"]:
        layers = []
        for spec in model_cfg["layers"]:
            kwargs = {k: v for k, v in spec.items() if k != "type"}
            layers.append(getattr(nn, spec["type"])(**kwargs))
        model: nn.Module = nn.Sequential(*layers)
    elif model_cfg["builtin"]:
        try:
            model = BUILTINS[model_cfg["builtin"]](**model_cfg["kwargs"])
        except TypeError as err:
            raise ConfigError(f"[model] kwargs: {err}") from None
    else:
        model = _from_factory(model_cfg["factory"], model_cfg["kwargs"])
    apply_init(model, model_cfg["init"])
    return model


def _from_factory(target: str, kwargs: dict[str, Any]) -> nn.Module:
    module_name, _, func_name = target.partition(":")
    if not module_name or not func_name:
        raise ConfigError(f"[model] factory: expected 'module:function', got {target!r}")
    try:
        module = import_user_module(module_name)
    except ImportError as err:
        raise ConfigError(f"[model] factory: cannot import {module_name!r}: {err}") from None
    except (Exception, SystemExit) as err:  # user code: a SyntaxError, a raise, sys.exit
        raise ConfigError(
            f"[model] factory: importing {module_name!r} failed: {user_error(err)}"
        ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"[model] factory: {module_name!r} has no function {func_name!r}")
    try:
        model = func(**kwargs)
    except (Exception, SystemExit) as err:  # user code: report whatever it raised, as one line
        raise ConfigError(f"[model] factory: {target} failed: {user_error(err)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"[model] factory: {target} returned {type(model).__name__}, not a Module"
        )
    return model


def user_error(err: BaseException) -> str:
    """What user code raised, as one line (sys.exit(3) is 'SystemExit: 3')."""
    text = f"{type(err).__name__}: {err}".strip()
    return text.splitlines()[0] if text else type(err).__name__


def apply_init(model: nn.Module, rules: list[dict[str, Any]]) -> None:
    params = dict(model.named_parameters())
    for i, rule in enumerate(rules):
        names = [n for n in params if fnmatch.fnmatchcase(n, rule["params"])]
        if not names:
            raise ConfigError(
                f"[model] init[{i}].params: {rule['params']!r} matches no parameter "
                f"(parameters: {', '.join(params)})"
            )
        for name in names:
            _init_tensor(params[name], rule, f"[model] init[{i}]")


def _init_tensor(p: nn.Parameter, rule: dict[str, Any], where: str) -> None:
    dist = rule["dist"]
    with torch.no_grad():
        if dist == "normal":
            nn.init.normal_(p, rule["mean"], rule["std"])
        elif dist == "uniform":
            nn.init.uniform_(p, rule["a"], rule["b"])
        elif dist == "constant":
            nn.init.constant_(p, rule["value"])
        elif dist == "zeros":
            nn.init.zeros_(p)
        elif dist == "ones":
            nn.init.ones_(p)
        else:
            if p.dim() < 2:
                raise ConfigError(f"{where}: {dist} needs a tensor with at least 2 dimensions")
            fn = getattr(nn.init, dist + "_")
            arg = rule.get("gain", rule.get("a"))
            fn(p, arg) if dist.startswith(("xavier", "orthogonal")) else fn(p, a=arg)
