"""The rank view's cost: a 2-process run (torchrun + gloo) with the per-rank view on and off.

With the view on, each rank times its forward passes (two clock reads a step, by hooks),
sends six numbers with its losses in the all-reduce that happens anyway every 20 steps,
and rank 0 rewrites ranks.json at most once a second. Off (TORCHDECK_RANK_VIEW=0) the
losses are reduced alone. The runs alternate (on-off, then off-on) for several rounds; each run's
throughput is its own samples/s over its training time (run.toml [summary], start-up left
out). Prints both, their ratio per round and the median ratio (target >= 0.98), and
whether the final weights are bitwise equal (the view must not change training).

First, since two processes and their start-ups on a shared machine are noisy, the same
comparison in one process: a rank's step with and without the view's hooks, figures and
file, in alternating blocks.

    .venv/bin/python bench/dist_view.py [--rounds 3] [--epochs 20] [--preset digits-cnn]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def one_run(preset: str, epochs: int, view: bool, runs: Path) -> tuple[float, dict]:
    env = {**os.environ, "TORCHDECK_RANK_VIEW": "1" if view else "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "tui.cli", "train", preset, "--nproc", "2",
         "--set", f"train.epochs={epochs}", "--runs-dir", str(runs)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    meta = tomllib.loads((folder / "run.toml").read_text())
    assert (folder / "ranks.json").exists() == view, "ranks.json written iff the view is on"
    from engine.checkpoint import load_checkpoint

    return meta["summary"]["samples_per_s"], load_checkpoint(folder / "checkpoints" / "last.pt")


def step_costs(preset: str, rounds: int, steps: int) -> tuple[list[float], list[float]]:
    """The view's own cost, measured where the noise of two processes and start-ups is
    absent: one process, one thread (torchrun gives each rank one), the rank's share of a
    digits-cnn step (forward, loss, backward, Adam) with and without the view's hooks, its
    figures every 20 steps and its ranks.json once a second, alternating in blocks."""
    from types import SimpleNamespace

    from engine.build import build_parts
    from engine.presets import resolve_config
    from engine.procs.distributed import DistContext
    from engine.train.strategy import SYNC_STEPS, RankMeter

    torch.set_num_threads(1)
    config = resolve_config(preset, [])
    sides = {}
    with tempfile.TemporaryDirectory(prefix="torchdeck-bench-") as tmp:
        for view in (False, True):
            device, data, model, opt, loss_fn = build_parts(config)[:5]
            half = data.batch_size // 2
            prep = SimpleNamespace(model=model, data=SimpleNamespace(batch_size=half),
                                   device=device, run=SimpleNamespace(path=Path(tmp)))  # fmt: skip
            meter = RankMeter(prep, DistContext(0, 2, 0, "gloo")) if view else None
            sides[view] = (model, opt, loss_fn, data.x[:half], data.y[:half], meter)

        def block(view: bool) -> float:
            model, opt, loss_fn, x, y, meter = sides[view]
            t0 = time.perf_counter()
            for i in range(steps):
                loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if meter is not None and (i + 1) % SYNC_STEPS == 0:
                    row = meter.row() + [0.0]
                    meter.publish([row, row])
            return steps / (time.perf_counter() - t0)

        on, off = [], []
        for r in range(rounds):
            for view in (True, False) if r % 2 == 0 else (False, True):
                (on if view else off).append(block(view))
    return on, off


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--preset", default="digits-cnn")
    parser.add_argument("--micro-only", action="store_true", help="only the in-process part")
    args = parser.parse_args()
    on, off = step_costs(args.preset, rounds=20, steps=200)
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    print(
        f"one rank's step, in one process (20 blocks of 200 steps, alternating):\n"
        f"  view on   median {statistics.median(on):7.1f} steps/s\n"
        f"  view off  median {statistics.median(off):7.1f} steps/s\n"
        f"  on / off  median {statistics.median(ratios):.3f} (blocks "
        f"{min(ratios):.3f}-{max(ratios):.3f}; target >= 0.98)\n",
        flush=True,
    )
    if args.micro_only:
        return 0
    ratios, ons, offs, equal = [], [], [], True
    with tempfile.TemporaryDirectory(prefix="torchdeck-bench-") as tmp:
        for r in range(args.rounds):
            # on-off, then off-on: a drift in the machine's load favours neither side
            first = r % 2 == 0
            a, ck_a = one_run(args.preset, args.epochs, first, Path(tmp) / f"a{r}")
            b, ck_b = one_run(args.preset, args.epochs, not first, Path(tmp) / f"b{r}")
            (on, ck_on), (off, ck_off) = ((a, ck_a), (b, ck_b)) if first else ((b, ck_b), (a, ck_a))
            same = all(torch.equal(ck_on["model"][k], v) for k, v in ck_off["model"].items())
            equal = equal and same
            ons.append(on)
            offs.append(off)
            ratios.append(on / off)
            print(
                f"round {r + 1}: view on {on:8.1f} samples/s   off {off:8.1f} samples/s   "
                f"ratio {on / off:.3f}   weights {'equal' if same else 'DIFFER'}",
                flush=True,
            )
    ratio = statistics.median(ratios)
    print(
        f"\n{args.preset}, 2 processes (gloo), {args.epochs} epochs, {args.rounds} rounds\n"
        f"  view on   median {statistics.median(ons):8.1f} samples/s\n"
        f"  view off  median {statistics.median(offs):8.1f} samples/s\n"
        f"  on / off  median {ratio:.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f}; "
        f"target >= 0.98)\n"
        f"  final weights bitwise equal: {equal}"
    )
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
