"""The app opening long runs: time until the loss plot holds the whole curve, and peak RSS.

For each N (10^5, 10^6; 10^7 with --max-n 7) builds a finished `kink` run of N logged steps
in today's format (bench/long_runs.py's builder: no summary, a run from before them), then,
each in a FRESH process, starts the app with `make_app(attach=run_dir)` under
`App.run_test()` and measures:

    start-up   from the process's start until the app is running (imports, first frame)
    curve      from then until the loss plot holds the whole curve (train.total == N)
    RSS        the process's peak resident memory (resource.getrusage)

twice: the first open (which summarises the old run once, engine.summary) and a later one
(from the saved summary). Prints a table and the ratio largest N / smallest N.

    .venv/bin/python bench/app_long_runs.py [--max-n 6] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from long_runs import build  # noqa: E402  (bench/long_runs.py)

CHILD = """
import time
t0 = time.perf_counter()
import asyncio, json, resource, sys
from tui.app import make_app
from tui.panes.loss_plot import LossPlot

run_dir, runs_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    app = make_app(runs_dir=runs_dir, attach=run_dir, tick_s=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        t1 = time.perf_counter()
        plot = app.query_one(LossPlot)
        while plot.model.train.total < n:
            if time.perf_counter() - t1 > 300:
                raise SystemExit(f"timed out: {plot.model.train.total} of {n} steps")
            await pilot.pause(0.005)
        t2 = time.perf_counter()
        plot.render()  # and it draws
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

startup, curve, draw = asyncio.run(main())
mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"startup": startup, "curve": curve, "draw": draw, "mb": mb}))
"""


def open_app(run_dir: Path, runs_dir: Path, n: int, config_home: Path) -> dict:
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), str(runs_dir), str(n)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"the app process failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=6, help="largest N as a power of ten")
    parser.add_argument("--min-n", type=int, default=5, help="smallest N as a power of ten")
    parser.add_argument("--repeat", type=int, default=1, help="later opens (best of)")
    args = parser.parse_args(argv)
    sizes = [10**k for k in range(args.min_n, args.max_n + 1)]
    rows: dict[int, dict[str, dict]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="torchdeck-app-long-"))
    try:
        for n in sizes:
            runs_dir = tmp / f"runs-{n}"
            run = build(runs_dir, n)
            first = open_app(run.path, runs_dir, n, tmp / "config")
            later = min((open_app(run.path, runs_dir, n, tmp / "config")
                         for _ in range(max(1, args.repeat))), key=lambda r: r["curve"])
            rows[n] = {"first": first, "later": later}
            print(f"  N={n:,}: first open {first['curve']:.2f} s {first['mb']:.0f} MB; "
                  f"later {later['curve']:.2f} s {later['mb']:.0f} MB", flush=True)
            shutil.rmtree(runs_dir, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("| N steps | start-up | first open: curve shows | RSS | later open: curve shows "
          "| RSS |")
    print("|---|---|---|---|---|---|")
    for n, r in rows.items():
        f, la = r["first"], r["later"]
        print(f"| {n:.0e} | {la['startup']:.2f} s | {f['curve']:.3f} s | {f['mb']:.0f} MB "
              f"| {la['curve']:.3f} s | {la['mb']:.0f} MB |")
    lo, hi = sizes[0], sizes[-1]
    if hi != lo:
        print()
        for kind in ("first", "later"):
            a, b = rows[lo][kind], rows[hi][kind]
            print(f"ratio {hi:.0e} / {lo:.0e}, {kind} open: curve {b['curve'] / a['curve']:.2f}x, "
                  f"RSS {b['mb'] / a['mb']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
