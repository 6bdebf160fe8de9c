"""Fixed sweeps, an LR-finder result and gradient-check reports for the app's tests of the sweep
group, the LR finder and the gradient check: plain values, no torch, no clock, no threads of
their own (tests/tui_fakes.py's FakeEngine plus the engine port's tools)."""

from __future__ import annotations

import math
from typing import Any

from engine.gradcheck import GradReport, GradRow
from engine.lr_find import RULE, LRFindResult, lr_schedule
from engine.sweep import SweepRunView, SweepView
from tui_fakes import FakeEngine

SWEEP_PATH = "/runs/sweeps/20250103-000000-kink"


def fake_sweep(state: str = "running") -> SweepView:
    """Four lr values of kink: two finished, one running, one waiting."""
    def run(n: int, lr: float, status: str, final: float | None) -> SweepRunView:
        rid = f"20250103-00000{n}-kink" if status != "waiting" else ""
        return SweepRunView(n, {"optim.lr": lr}, status, rid, f"/runs/{rid}" if rid else "",
                            {"final_loss": final} if final is not None else {})

    runs = [run(1, 0.001, "finished", 0.25), run(2, 0.003, "finished", 0.0625),
            run(3, 0.01, "running", 0.5), run(4, 0.03, "waiting", None)]
    if state == "finished":
        runs[2] = run(3, 0.01, "finished", 0.125)
        runs[3] = run(4, 0.03, "diverged", None)
    counts = {"waiting": 1, "running": 1, "done": 2, "cancelled": 0} if state == "running" \
        else {"waiting": 0, "running": 0, "done": 4, "cancelled": 0}
    return SweepView(id="20250103-000000-kink", path=SWEEP_PATH, preset="kink",
                     created="2025-01-03 00:00", state=state, counts=counts,
                     grid=[("optim.lr", [0.001, 0.003, 0.01, 0.03]), ("train.epochs", [20])],
                     keys=["optim.lr"], runs=runs, metrics=["final_loss"])


def fake_lr_result() -> LRFindResult:
    """A textbook range test: flat, a steep fall around 1e-3, a minimum near 1e-2, then up."""
    lrs = lr_schedule(1e-7, 10.0, 200)[:180]
    losses = []
    for lr in lrs:
        x = math.log10(lr)
        losses.append(1.0 - 0.8 / (1 + math.exp(-3 * (x + 3))) + 0.05 * max(0.0, x + 2) ** 3)
    best = min(range(len(losses)), key=lambda i: losses[i])
    return LRFindResult(lrs, losses, list(losses), 1e-3, RULE, "diverged", lrs[best])


def fake_report(ok: bool = True) -> GradReport:
    report = GradReport("kink", 16, 60.5)
    for i, (name, shape) in enumerate((("0.weight", "1x1"), ("0.bias", "1"),
                                       ("2.weight", "1x1"), ("2.bias", "1"))):
        fail = not ok and name.startswith("2.")
        report.rows.append(GradRow(name, "parameter", f"{name[0]} (Linear)", shape, 1, 1,
                                   0.5 if fail else 1e-9 * (i + 1),
                                   0.25 if fail else 2e-9 * (i + 1), not fail))
    return report


class ToolsEngine(FakeEngine):
    """FakeEngine with the sweep, LR-finder and gradcheck tools of the engine port."""

    def __init__(self, sweep: SweepView | None = None, report_ok: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sweep_view = sweep
        self.report_ok = report_ok
        self.lr_configs: list[dict[str, Any]] = []
        self.started_sweeps: list[tuple[Any, ...]] = []

    def sweeps(self, runs_dir: Any) -> list[SweepView]:
        return [self.sweep_view] if self.sweep_view is not None else []

    def sweep(self, path: Any) -> SweepView:
        assert self.sweep_view is not None
        return self.sweep_view

    def curve(self, run_dir: Any) -> list[tuple[int, float]]:
        """A different fixed curve per run: 1/step scaled by the run's number."""
        n = int(str(run_dir)[-6]) if str(run_dir)[-6].isdigit() else 1
        return [(s, n / s) for s in range(1, 101)]

    def start_sweep(self, config: Any, grid: Any, runs_dir: Any, sets: Any) -> SweepView:
        self.started_sweeps.append((config, grid, runs_dir, sets))
        return self.sweep_view or fake_sweep()

    def lr_find(self, config: Any, on_step: Any, cancelled: Any, steps: int = 200) -> Any:
        self.lr_configs.append(config)
        result = fake_lr_result()
        for i in range(0, len(result.lrs), 60):
            on_step(i + 1, result.lrs[i], result.losses[i])
        return result

    def gradcheck(self, config: Any, cancelled: Any) -> GradReport:
        return fake_report(self.report_ok)
