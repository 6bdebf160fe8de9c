"""Measuring a model outside the step loop: the test split, and the preset's report lines."""

from __future__ import annotations

from typing import Any

import torch

from engine.build import PreparedRun
from engine.exprs import evaluate as evaluate_expr


def evaluate(p: PreparedRun, batch_size: int) -> tuple[float, dict[str, float]]:
    """Mean loss per sample on the test split, and accuracy for classification (one sync)."""
    x, y = p.data.x_test, p.data.y_test
    classification = p.config["task"] == "classification"
    p.model.eval()
    total = x.new_zeros((), dtype=torch.float64)
    correct = x.new_zeros((), dtype=torch.int64)
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = p.model(x[i : i + batch_size])
            yb = y[i : i + batch_size]
            total += p.loss_fn(out, yb).double() * len(yb)
            if classification:
                correct += (out.argmax(dim=1) == yb).sum()
    p.model.train()
    total_f, correct_i = torch.stack([total, correct.double()]).tolist()
    metrics = {}
    if classification:
        metrics["accuracy"] = correct_i / len(x)
    return total_f / len(x), metrics


def report_values(p: PreparedRun) -> dict[str, Any]:
    """The preset's [report] expressions, evaluated on the final parameters and the data."""
    lines = p.config.get("report") or {}
    if not lines:
        return {}
    params = {n: t.detach() for n, t in p.model.named_parameters()}
    data = p.data
    extras = {"x": data.x, "y": getattr(data, "y", None), **data.extras}
    out = {}
    for name, text in lines.items():
        value = evaluate_expr(text, {"p": params, "d": extras})
        if isinstance(value, torch.Tensor):
            value = value.double().cpu()
            value = value.item() if value.numel() == 1 else value.flatten().tolist()  # item-ok
        out[name] = value
    return out
