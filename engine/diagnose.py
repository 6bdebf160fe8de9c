"""Explaining a run that trained but learned nothing (the dead-ReLU case of the seeds)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from engine.build import PreparedRun


def nothing_learned_message(prep: PreparedRun, initial: list[torch.Tensor] | None) -> str | None:
    """A one-line explanation if no parameter moved since the start, else None."""
    if initial is None:
        return None
    params = list(prep.model.parameters())
    if any(not torch.equal(p.detach(), p0) for p, p0 in zip(params, initial, strict=True)):
        return None
    dead = _dead_activations(prep.model, prep.data.x[:1000])
    if dead:
        return (
            f"nothing learned: no parameter changed, every gradient was zero; dead ReLU at "
            f"{', '.join(dead)}: its output is 0 for every input, so no gradient flows back "
            f"(try another seed, LeakyReLU, or a different init)"
        )
    return "nothing learned: no parameter changed in training, every gradient was zero"


def _dead_activations(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of ReLU modules whose output is zero for every input in x."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ReLU):
            hooks.append(module.register_forward_hook(_keep(outputs, name or "output")))
    if not hooks:
        return []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [
        f"layer {name} ({type(model.get_submodule(name)).__name__})"
        for name, out in outputs.items()
        if not out.any()
    ]


def _keep(store: dict[str, torch.Tensor], name: str):
    def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
        store[name] = output.detach()

    return hook
