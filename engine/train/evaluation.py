"""Measuring a model outside the step loop: the test split, and the preset's report lines."""

from __future__ import annotations

from typing import Any

import torch

from engine.build import PreparedRun
from engine.exprs import evaluate as evaluate_expr


def evaluate(p: PreparedRun, batch_size: int) -> tuple[float, dict[str, float]]:
    """Mean loss per sample on the test split, and accuracy for classification (one sync).
    The split comes in batches from the data (resident slices, or a stream)."""
    classification = p.config["task"] == "classification"
    p.model.eval()
    total = correct = None
    n = 0
    with torch.no_grad():
        for xb, yb in p.data.eval_batches(batch_size):
            if total is None:
                total = xb.new_zeros((), dtype=torch.float64)
                correct = xb.new_zeros((), dtype=torch.int64)
            out = p.model(xb)
            total += p.loss_fn(out, yb).double() * len(yb)
            if classification:
                correct += (out.argmax(dim=1) == yb).sum()
            n += len(yb)
    p.model.train()
    if total is None:
        return float("nan"), {}
    total_f, correct_i = torch.stack([total, correct.double()]).tolist()
    metrics = {}
    if classification:
        metrics["accuracy"] = correct_i / n
    return total_f / n, metrics


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
