"""The rank view's cost: a 2-process run (torchrun + gloo) with the per-rank view on and off.

With the view on, each rank times its forward passes (two clock reads a step, by hooks),
sends five numbers with its losses in the all-reduce that happens anyway every 20 steps,
and rank 0 rewrites ranks.json at most once a second.

Two separate 2-process runs differ by 10% or more here (start-up, placement, the
neighbours' load), so the comparison is made inside one run: with TORCHDECK_RANK_VIEW=blocks
the view is switched on and off in alternating blocks of one epoch (on, off, off, on, ...;
engine/train/view_blocks.py), and each pair of neighbouring blocks gives one ratio of
throughputs (steps/s, evaluation included on both sides). The first pair (warm-up) is
left out. Prints the median ratio (target >= 0.98). A run with the view off trains the same
epochs first: its final weights must be bitwise equal to the switched run's (the view must
not change training).

First, what the view does is timed piece by piece in one process (hooks, figures,
ranks.json) against a rank's step: its share of the time, free of the two-process noise.

    .venv/bin/python bench/dist_view.py [--epochs 200] [--preset digits-cnn]
"""

from __future__ import annotations

import argparse
import json
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


def one_run(preset: str, epochs: int, runs: Path, env: dict[str, str]) -> tuple[dict, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "tui.cli", "train", preset, "--nproc", "2",
         "--set", f"train.epochs={epochs}", "--runs-dir", str(runs)],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    meta = tomllib.loads((folder / "run.toml").read_text())
    from engine.checkpoint import load_checkpoint

    return meta, load_checkpoint(folder / "checkpoints" / "last.pt")


def view_work(preset: str) -> dict[str, float]:
    """The view's own work, timed piece by piece in one process, one thread (torchrun gives
    each rank one), against the rank's share of a step (forward, loss, backward, optimizer
    at half the batch): microseconds of each, medians of 5 repeats."""
    from types import SimpleNamespace

    from engine.build import build_parts
    from engine.presets import resolve_config
    from engine.procs.distributed import DistContext
    from engine.train.strategy import RankMeter

    def per_call(fn, n: int) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(times)

    torch.set_num_threads(1)
    device, data, model, opt, loss_fn = build_parts(resolve_config(preset, []))[:5]
    half = data.batch_size // 2
    x, y = data.x[:half], data.y[:half]

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    tiny, one = torch.nn.Linear(2, 2), torch.zeros(1, 2)
    with tempfile.TemporaryDirectory(prefix="torchdeck-bench-") as tmp:
        prep = SimpleNamespace(model=tiny, data=SimpleNamespace(batch_size=half),
                               device=device, run=SimpleNamespace(path=Path(tmp)))  # fmt: skip
        meter = RankMeter(prep, DistContext(0, 2, 0, "gloo"))
        hooked = per_call(lambda: tiny(one), 20000)  # the hooks' dispatch and their work
        meter.detach()
        bare = per_call(lambda: tiny(one), 20000)
        row = meter.row() + [0.0]
        out = {
            "step": per_call(step, 200),
            "hooks": max(hooked - bare, 0.0),
            "row": per_call(meter.row, 2000),
            "publish": per_call(lambda: meter.publish([row, row], force=True), 500),
        }
    return out


def blocks_of(path: Path) -> list[tuple[bool, float]]:
    """(view on, steps/s) of each whole block the switched run wrote."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["on"], r["steps"] / r["s"]) for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--preset", default="digits-cnn")
    parser.add_argument("--micro-only", action="store_true", help="only the in-process part")
    args = parser.parse_args()
    from engine.ranks import RANKS_EVERY_S
    from engine.train.strategy import SYNC_STEPS

    w = view_work(args.preset)
    per_step = w["hooks"] + w["row"] / SYNC_STEPS  # ranks.json: once a second, not per step
    share = per_step / w["step"] + w["publish"] / 1e6 / RANKS_EVERY_S
    print(
        f"the view's work, timed piece by piece (one process, one thread):\n"
        f"  a rank's step {w['step']:8.1f} us\n"
        f"  hooks         {w['hooks']:8.2f} us a step (two clock reads, by forward hooks)\n"
        f"  figures       {w['row']:8.2f} us every {SYNC_STEPS} steps (incl. the RSS read)\n"
        f"  ranks.json    {w['publish']:8.1f} us every {RANKS_EVERY_S:g} s (rank 0)\n"
        f"  in all        {100 * share:.2f}% of the time (target <= 2%)\n",
        flush=True,
    )
    if args.micro_only:
        return 0
    with tempfile.TemporaryDirectory(prefix="torchdeck-bench-") as tmp:
        tmp = Path(tmp)
        meta, ck_off = one_run(args.preset, args.epochs, tmp / "off", {"TORCHDECK_RANK_VIEW": "0"})
        per_epoch = meta["summary"]["steps"] // args.epochs
        log = tmp / "blocks.jsonl"
        env = {"TORCHDECK_RANK_VIEW": "blocks",
               "TORCHDECK_RANK_VIEW_BLOCKS": f"{per_epoch}:{log}"}  # fmt: skip
        meta_b, ck_b = one_run(args.preset, args.epochs, tmp / "blocks", env)
        blocks = blocks_of(log)
    equal = all(torch.equal(ck_b["model"][k], v) for k, v in ck_off["model"].items())
    pairs = [(a, b) for a, b in zip(blocks[0::2], blocks[1::2], strict=False)][1:]
    ratios = [(a[1] / b[1]) if a[0] else (b[1] / a[1]) for a, b in pairs]
    ons = [r for view, r in blocks[2:] if view]
    offs = [r for view, r in blocks[2:] if not view]
    # the whole run's on time against its off time: the noise of single blocks averages out
    total = statistics.mean(ons) / statistics.mean(offs)
    print(
        f"{args.preset}, 2 processes (gloo), {args.epochs} epochs, {per_epoch} steps an epoch:\n"
        f"  separate runs: view off {meta['summary']['samples_per_s']:8.1f} samples/s, "
        f"switched {meta_b['summary']['samples_per_s']:8.1f} samples/s (noise, not the view)\n"
        f"  one run, the view switched every {per_epoch} steps (an epoch), "
        f"{len(pairs)} pairs of blocks after the first:\n"
        f"  view on   median {statistics.median(ons):8.1f} steps/s\n"
        f"  view off  median {statistics.median(offs):8.1f} steps/s\n"
        f"  on / off  median {statistics.median(ratios):.3f} "
        f"(pairs {min(ratios):.3f}-{max(ratios):.3f}; target >= 0.98)\n"
        f"  on / off  mean throughputs {total:.3f}\n"
        f"  final weights bitwise equal to the view-off run: {equal}"
    )
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
