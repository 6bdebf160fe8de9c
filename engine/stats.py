"""Parameter statistics for the inspector, computed on the device and fetched in one transfer."""

from __future__ import annotations

import torch
from torch import nn

from engine.events import ParamStat

HIST_BINS = 20
SMALL = 16  # tensors with at most this many elements carry their values
_FIXED = 8  # mean, std, min, max, grad_norm, update_ratio, zero_frac, dead_frac


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def param_stats(model: nn.Module, before: list[torch.Tensor] | None) -> tuple[ParamStat, ...]:
    """One ParamStat per parameter; `before` is the parameters before the last optimiser step."""
    named = list(model.named_parameters())
    if not named:
        return ()
    dtype = torch.float32 if named[0][1].device.type == "mps" else torch.float64
    rows = []
    for i, (_, p) in enumerate(named):
        v = p.detach().to(dtype).flatten()
        g = p.grad.detach().to(dtype) if p.grad is not None else None
        nan = v.new_tensor(float("nan"))
        grad_norm = g.norm() if g is not None else nan
        if before is not None:
            update = (v - before[i].to(dtype).flatten()).norm()
            ratio = update / v.norm().clamp_min(1e-12)
        else:
            ratio = nan
        if g is not None and g.dim() >= 1:
            dead = (g.reshape(g.shape[0], -1).abs().sum(dim=1) == 0).to(dtype).mean()
        else:
            dead = nan
        fixed = torch.stack(
            [
                v.mean(),
                v.std(correction=0),
                v.min(),
                v.max(),
                grad_norm,
                ratio,
                (v == 0).to(dtype).mean(),
                dead,
            ]
        )
        hist = torch.histc(torch.nan_to_num(v.float(), 0.0, 0.0, 0.0), bins=HIST_BINS).to(dtype)
        small = v if v.numel() <= SMALL else v.new_empty(0)
        rows.append(torch.cat([fixed, hist, small]))
    flat = torch.cat(rows).tolist()  # the one host transfer for all parameters
    out, pos = [], 0
    for name, p in named:
        n_small = p.numel() if p.numel() <= SMALL else 0
        chunk = flat[pos : pos + _FIXED + HIST_BINS + n_small]
        pos += len(chunk)
        mean, std, lo, hi, gnorm, ratio, zero, dead = chunk[:_FIXED]
        out.append(
            ParamStat(
                name=name,
                shape=tuple(p.shape),
                numel=p.numel(),
                mean=mean,
                std=std,
                min=lo,
                max=hi,
                grad_norm=None if gnorm != gnorm else gnorm,
                update_ratio=None if ratio != ratio else ratio,
                zero_frac=zero,
                dead_frac=None if dead != dead else dead,
                values=tuple(chunk[_FIXED + HIST_BINS : _FIXED + HIST_BINS + n_small]) or None,
                hist_counts=tuple(int(c) for c in chunk[_FIXED : _FIXED + HIST_BINS]),
                hist_edges=(lo, hi),
            )
        )
    return tuple(out)


def fit_snapshot(model: nn.Module, data) -> tuple[list[float], list[float], list[float]] | None:
    """For 1-D regression data (`data.fit_1d`): x, y and the model's prediction, fetched in
    one transfer; None for other data."""
    if not getattr(data, "fit_1d", False):
        return None
    model.eval()
    with torch.no_grad():
        pred = model(data.x)
    model.train()
    xs, ys, ps = torch.stack([data.x.flatten(), data.y.flatten(), pred.flatten()]).tolist()
    return xs, ys, ps
