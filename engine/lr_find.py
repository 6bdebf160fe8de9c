"""The learning-rate range test (Smith 2015, as in fastai and Lightning), on a fresh model.

The model, optimiser, data and loss are built from the config exactly as a run would build
them (engine.build.build_parts), but nothing is written: no run folder, no checkpoint. The
lr grows exponentially from `start` to `end` over `steps` steps (one batch each). The test
stops when the loss explodes (its exponential moving average, beta 0.98 as in fastai and
Lightning, exceeds 4x its best, or a loss is not finite) or the lr reaches `end`. The
best is counted, and the explosion looked for, only after a warm-up of a tenth of the steps
or one epoch of batches, whichever is more (at most half the steps): with small batches of
very different losses (kink: batches of 2) the average of the first few is noise, and a
lucky near-zero start would call the first ordinary batch an explosion. The user's next
run builds its own model and starts fresh.

The curve shown and the suggestion use a centred moving average of the losses (a window of
a twentieth of the steps, at least 5; two epochs of batches on a dataset of a few tiny
batches: smoothing_window): no lag, where an exponential average drawn against a growing lr
shifts the curve to the right.

Suggestion rule ("steepest"): the lr where the smoothed loss falls fastest against log lr
(the most negative slope), looked for after the first tenth of the steps and before the
smoothed loss reaches its minimum. Lightning's and fastai's rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError

RULE = "steepest: the most negative slope of the smoothed loss against log lr, before its minimum"


@dataclass(frozen=True)
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed (centred moving average)
    raw_losses: list[float]
    suggestion: float | None
    rule: str
    stopped: str  # "diverged" (loss > 4x best) or "end" (lr reached end)
    min_loss_lr: float | None  # the lr at the smoothed loss's minimum (for reference)


def lr_schedule(start: float, end: float, steps: int) -> list[float]:
    return [start * (end / start) ** (i / max(1, steps - 1)) for i in range(steps)]


def centred_average(values: Sequence[float], window: int) -> list[float]:
    half = max(1, window // 2)
    out = []
    for i in range(len(values)):
        part = values[max(0, i - half) : i + half + 1]
        out.append(sum(part) / len(part))
    return out


def smoothing_window(steps: int, per_epoch: Any = 0) -> int:
    """A twentieth of the steps (at least 5); on a small dataset whose epoch is a tenth of
    the steps or less, two epochs of batches: with a few tiny batches per epoch (kink: 10
    batches of 2) each batch's loss depends on which samples it drew, and only averages
    spanning whole epochs show the trend."""
    window = max(5, steps // 20)
    if isinstance(per_epoch, int) and 0 < per_epoch <= steps // 10:
        window = max(window, 2 * per_epoch)
    return window


def suggest(lrs: Sequence[float], losses: Sequence[float]) -> tuple[float | None, str]:
    """The steepest-descent suggestion (see the module docstring) and its rule."""
    n = len(losses)
    if n < 5:
        return None, RULE
    best = min(range(n), key=lambda i: losses[i])
    skip = max(1, n // 10)
    logs = [math.log10(x) for x in lrs]
    lo, hi = skip, max(skip + 2, best + 1)
    hi = min(hi, n - 1)
    if hi - lo < 2:
        lo, hi = 1, n - 1
    slopes = [
        ((losses[i + 1] - losses[i - 1]) / (logs[i + 1] - logs[i - 1]), i) for i in range(lo, hi)
    ]
    if not slopes:
        return None, RULE
    _, i = min(slopes)
    return lrs[i], RULE


def lr_find(
    config: dict[str, Any],
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 200,
    beta: float = 0.98,
    diverge: float = 4.0,
    on_step: Callable[[int, float, float], None] | None = None,
) -> LRFindResult:
    """Run the range test on a fresh model built from `config`; returns plain lists."""
    import torch

    from engine.build import build_parts

    if not (0 < start < end):
        raise ConfigError(f"lr-find: expected 0 < --start < --end, got {start:g} and {end:g}")
    if steps < 10:
        raise ConfigError(f"lr-find --steps {steps}: expected at least 10")
    _device, data, model, optimizer, loss_fn = build_parts(config)
    schedule = lr_schedule(start, end, steps)
    lrs: list[float] = []
    raw: list[float] = []
    smooth: list[float] = []
    avg, best, stopped = 0.0, math.inf, "end"
    per_epoch = getattr(data, "steps_per_epoch", 0)
    warm_up = min(max(steps // 10, per_epoch if isinstance(per_epoch, int) else 0), steps // 2)
    model.train()

    def batches():
        epoch = 0
        while True:
            yield from data.batches(epoch)
            epoch += 1

    for i, (lr, (x, y)) in enumerate(zip(schedule, batches(), strict=False)):
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        lrs.append(lr)
        raw.append(value)
        if not math.isfinite(value):
            smooth.append(value)
            stopped = "diverged"
            break
        avg = beta * avg + (1 - beta) * value
        s = avg / (1 - beta ** (i + 1))
        smooth.append(s)
        if on_step is not None:
            on_step(i, lr, s)
        if i < warm_up:
            continue
        best = min(best, s)
        if i > warm_up and s > diverge * best:
            stopped = "diverged"
            break
    del model, optimizer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    finite = [(lr, v) for lr, v in zip(lrs, raw, strict=True) if math.isfinite(v)]
    f_lrs = [p[0] for p in finite]
    f_losses = centred_average([p[1] for p in finite], smoothing_window(steps, per_epoch))
    suggestion, rule = suggest(f_lrs, f_losses)
    min_lr = f_lrs[min(range(len(f_losses)), key=lambda i: f_losses[i])] if f_losses else None
    f_raw = [p[1] for p in finite]
    return LRFindResult(f_lrs, f_losses, f_raw, suggestion, rule, stopped, min_lr)


# --- the command line (prints; the app calls lr_find) ------------------------------------
def text_plot(
    lrs: Sequence[float],
    losses: Sequence[float],
    mark: float | None,
    width: int = 64,
    height: int = 16,
) -> str:
    """Loss against lr (log x) as plain text; `|` marks the suggestion."""
    points = [(math.log10(x), y) for x, y in zip(lrs, losses, strict=False) if math.isfinite(y)]
    if len(points) < 2:
        return "(nothing to plot)"
    x0, x1 = points[0][0], points[-1][0]
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    grid = [[" "] * width for _ in range(height)]

    def col(x: float) -> int:
        return min(width - 1, max(0, round((x - x0) / span_x * (width - 1))))

    if mark is not None and mark > 0:
        for row in grid:
            row[col(math.log10(mark))] = "|"
    for x, y in points:
        grid[height - 1 - round((y - y0) / span_y * (height - 1))][col(x)] = "*"
    label_w = max(len(f"{y1:.3g}"), len(f"{y0:.3g}"))
    lines = []
    for r, row in enumerate(grid):
        label = f"{y1:.3g}" if r == 0 else f"{y0:.3g}" if r == height - 1 else ""
        lines.append(f"{label:>{label_w}} |" + "".join(row).rstrip())
    axis = [" "] * width
    ticks = [" "] * (width + 8)
    for decade in range(math.ceil(x0), math.floor(x1) + 1):
        c = col(decade)
        axis[c] = "+"
        text = f"1e{decade}"
        if all(ch == " " for ch in ticks[max(0, c - 1) : c + len(text) + 1]):
            ticks[c : c + len(text)] = list(text)
    lines.append(" " * label_w + " +" + "".join(axis).replace(" ", "-"))
    lines.append(" " * (label_w + 2) + "".join(ticks).rstrip() + "   lr (log scale)")
    return "\n".join(lines)


def cmd_lr_find(
    preset: str,
    sets: Sequence[str],
    preset_dirs: Sequence[str],
    start: float,
    end: float,
    steps: int,
) -> int:
    from engine.presets import resolve_config

    config = resolve_config(preset, list(sets), preset_dirs)
    result = lr_find(config, start, end, steps)
    print(text_plot(result.lrs, result.losses, result.suggestion))
    why = "the loss exploded" if result.stopped == "diverged" else f"lr reached {end:g}"
    print(
        f"lr-find {config['name']}: {len(result.lrs)} steps, lr {start:g} .. "
        f"{result.lrs[-1]:.3g} (stopped: {why}); preset lr {config['optim']['lr']:g}"
    )
    if result.min_loss_lr is not None:
        print(f"lowest smoothed loss at lr {result.min_loss_lr:.3g}")
    if result.suggestion is None:
        print("no suggestion: too few steps before the loss exploded (try a smaller --start)")
        return 1
    print(f"suggested lr: {result.suggestion:.3g}  (rule: {result.rule})")
    print(f"use it with: --set optim.lr={result.suggestion:.3g}")
    return 0


# --- a child process for the app: `python -m engine.lr_find` ------------------------------
def child_main() -> int:
    """Read {"config", "start", "end", "steps"} as JSON on stdin; write JSON lines: {"step",
    "lr", "loss"} as it goes (at most ~20 a second), then {"result": {...}} or {"error"}."""
    import json
    import sys
    import time

    from engine.errors import TorchdeckError

    request = json.loads(sys.stdin.read())
    last = [0.0]

    def on_step(i: int, lr: float, loss: float) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.05:
            last[0] = now
            print(json.dumps({"step": i + 1, "lr": lr, "loss": loss}), flush=True)

    try:
        result = lr_find(
            request["config"],
            float(request.get("start", 1e-7)),
            float(request.get("end", 10.0)),
            int(request.get("steps", 200)),
            on_step=on_step,
        )
    except TorchdeckError as err:
        print(json.dumps({"error": str(err)}), flush=True)
        return 2
    except Exception as err:  # a model that breaks: one line, not a traceback
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
        return 1
    from dataclasses import asdict

    print(json.dumps({"result": asdict(result)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
