"""Long runs: what viewing a run costs at 10^5, 10^6 and 10^7 logged steps.

Builds a finished `kink` run of N logged steps (events.jsonl in today's format, written
directly: a StepMetrics line of 1 000 losses and an EpochEnd line per 1 000 steps, no
summary: a run from before summaries), then measures, each in a fresh process (wall time
and peak RSS of that process; the best time of --repeat tries):

    first open      summarising the old run (engine.summary.ensure_summary)
    later open      read_curve (2 000 points) from the saved summary
    follow          FollowHandle(history="summary") until its History event is out
    attach --plain  of the finished run
    export --csv    to /dev/null
    runs            the runs listing

and prints the ratio 10^7 / 10^5 (largest / smallest N) of each. Then the training
throughput of `kink` with the summary writer on and off, interleaved rounds in one
process (the writer as a sink right after the run-folder writer, as the hook puts it),
and the share of a run's time spent in the writer.

    .venv/bin/python bench/long_runs.py [--max-n 1000000] [--rounds 5] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine import events as ev
from engine.presets import resolve_config
from engine.rundir import EVENTS_FILE, RunDir
from engine.summary import SUMMARY_DIR

PY = sys.executable
CHUNK = 1000

MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # this one child's
op = [float(x[5:]) for x in r.stderr.splitlines() if x.startswith("op_s=")]
print(json.dumps({"rc": r.returncode, "s": wall, "op": op[-1] if op else None, "mb": peak,
                  "err": r.stderr[-2000:]}))
"""

# each case in a fresh process; it says how long its work took after start-up (op_s=)
CHILD = """
import sys, time
t = time.perf_counter()
kind, arg = sys.argv[1], sys.argv[2]
rc = 0
if kind == "summarise":
    from engine.summary import ensure_summary
    ensure_summary(arg)
elif kind == "curve":
    from engine.summary import read_curve
    read_curve(arg)
elif kind == "follow":
    from engine.handle import FollowHandle
    h = FollowHandle(arg, poll_s=0.05, history="summary")
    h.wait_loaded()
    got = h.drain()
    h.close()
    assert got and got[0].type == "history", got[:1]
else:
    from engine.cli import main
    rc = main(sys.argv[2:])
sys.stderr.write(f"\\nop_s={time.perf_counter() - t}\\n")
sys.exit(rc)
"""


def build(runs_dir: Path, n: int) -> RunDir:
    config = resolve_config("kink", {"train.device": "cpu"})
    run = RunDir.create(runs_dir, "kink", config, "cpu")
    rng = np.random.default_rng(n)
    epochs = n // CHUNK
    start = ev.RunStarted(
        run_id=run.id, preset="kink", run_dir=str(run.path), device="cpu", task="regression",
        total_steps=n, total_epochs=epochs, steps_per_epoch=CHUNK, batch_size=2, lr=0.001,
    )  # fmt: skip
    t0 = time.perf_counter()
    with open(run.path / EVENTS_FILE, "w", buffering=1 << 20) as fh:
        fh.write(ev.event_to_json(start) + "\n")
        for e in range(epochs):
            first = e * CHUNK + 1
            losses = 10.0 * np.exp(-first / n * 5) * rng.exponential(1.0, CHUNK) + 0.01
            steps = ev.StepMetrics(
                first_step=first, epoch=e + 1, losses=tuple(losses.tolist()), lr=0.001,
                elapsed_s=first / 2000, samples_per_s=4000.0, steps_per_s=2000.0,
            )  # fmt: skip
            epoch = ev.EpochEnd(
                epoch=e + 1, step=first + CHUNK - 1, train_loss=float(losses.mean())
            )
            fh.write(ev.event_to_json(steps) + "\n")
            fh.write(ev.event_to_json(epoch) + "\n")
        summary = {"final_loss": float(losses[-1]), "steps": n, "epochs": epochs}
        fh.write(ev.event_to_json(ev.Finished(status="finished", step=n, summary=summary)) + "\n")
    run.update("finished", summary=summary)
    size = (run.path / EVENTS_FILE).stat().st_size
    print(
        f"  built {n:,} steps: events.jsonl {size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s"
    )
    return run


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds of the process, seconds of its work after start-up, peak RSS MB)."""
    out = subprocess.run([PY, "-c", MEASURE, *cmd], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {result['rc']}\n{result['err']}")
    return result["s"], result["op"], result["mb"]


def case(kind: str, *args: str) -> list[str]:
    return [PY, "-c", CHILD, kind, *args]


CASES = [
    ("first open (summarise)", lambda run: case("summarise", str(run.path))),
    ("later open (read_curve)", lambda run: case("curve", str(run.path))),
    ("FollowHandle until History", lambda run: case("follow", str(run.path))),
    ("attach --plain", lambda run: case("cli", "attach", str(run.path), "--plain")),
    ("export --csv", lambda run: case("cli", "export", str(run.path), "--csv", "-o", "/dev/null")),
    ("runs", lambda run: case("cli", "runs", "--runs-dir", str(run.path.parent))),
]


def viewing(sizes: list[int], root: Path, repeat: int) -> None:
    results: dict[str, dict[int, tuple[float, float, float]]] = {name: {} for name, _ in CASES}
    for n in sizes:
        run = build(root / f"n{n}", n)
        shutil.rmtree(run.path / SUMMARY_DIR, ignore_errors=True)
        for name, cmd in CASES:
            # the best of `repeat` (a shared machine's noise only ever adds), the first open
            # once (it saves the summary: the later ones would be later opens)
            times = [measure(cmd(run))]
            while len(times) < repeat and not name.startswith("first") and times[0][0] < 5:
                times.append(measure(cmd(run)))  # (a long one: once is enough)
            results[name][n] = (
                min(t[0] for t in times),
                min(t[1] for t in times),
                max(t[2] for t in times),
            )
            s, op, mb = results[name][n]
            print(f"  N={n:>10,}  {name:<28} {s:7.2f} s ({op:6.3f} s after start-up) "
                  f"{mb:6.0f} MB", flush=True)  # fmt: skip
        summary_mb = sum(p.stat().st_size for p in (run.path / SUMMARY_DIR).iterdir()) / 1e6
        print(f"  N={n:>10,}  summary folder {summary_mb:.1f} MB")
        shutil.rmtree(run.path.parent)
    lo, hi = sizes[0], sizes[-1]
    names = [f"10^{len(str(n)) - 1}" for n in sizes]
    print("\ntime of the process (its work after start-up), peak RSS")
    print(f"\n| case | {' | '.join(names)} | {names[-1]} / {names[0]}: time (work), memory |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for name, _ in CASES:
        row = results[name]
        cells = [f"{row[n][0]:.2f} s ({row[n][1]:.3f} s), {row[n][2]:.0f} MB" for n in sizes]
        ratio = (f"{row[hi][0] / row[lo][0]:.2f}x ({row[hi][1] / row[lo][1]:.2f}x), "
                 f"{row[hi][2] / row[lo][2]:.2f}x")  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")


# --- throughput ------------------------------------------------------------------------------


class TimedSummary:
    """Wraps the run-folder writer's summary sink (engine/train/writer.py) and counts the
    time spent in it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.spent_s = 0.0
        self.calls = 0

    def __call__(self, event: ev.Event) -> None:
        t = time.perf_counter()
        self.inner(event)
        self.spent_s += time.perf_counter() - t
        self.calls += 1


def _trainer(config: dict[str, Any], runs: str, with_summary: bool) -> Any:
    """A kink trainer whose run-folder writer keeps a summary, or (off) does not."""
    from engine.build import prepare_run
    from engine.train.loop import Trainer

    trainer = Trainer(prepare_run(config, runs))
    if not with_summary:
        trainer.writer.summary.close()  # let go of the summary's lock; write none
        trainer.writer.summary = lambda event: None
    return trainer


def sink_share(epochs: int) -> None:
    """The time the loop's thread spends in the summary writer, as a share of the run."""
    config = resolve_config(
        "kink", {"train.epochs": epochs, "train.seed": 1, "train.device": "cpu"}
    )
    with tempfile.TemporaryDirectory() as runs:
        trainer = _trainer(config, runs, with_summary=True)
        sink = trainer.writer.summary = TimedSummary(trainer.writer.summary)
        t = time.perf_counter()
        trainer.run()
        wall = time.perf_counter() - t
    print(f"  time in the summary writer: {sink.spent_s * 1000:.1f} ms over {sink.calls} events "
          f"in a {wall:.2f} s run of {epochs * 10} steps ({sink.spent_s / wall:.2%})")  # fmt: skip


def kink_run(epochs: int, with_summary: bool) -> tuple[float, float]:
    """(steps/s by wall clock, steps/s by this process's CPU time)."""
    config = resolve_config(
        "kink", {"train.epochs": epochs, "train.seed": 1, "train.device": "cpu"}
    )
    with tempfile.TemporaryDirectory() as runs:
        trainer = _trainer(config, runs, with_summary)
        t, c = time.perf_counter(), time.process_time()
        trainer.run()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if with_summary:
            assert (Path(trainer.p.run.path) / SUMMARY_DIR / "meta").exists()
    return epochs * 10 / wall, epochs * 10 / cpu


def throughput(rounds: int, epochs: int) -> None:
    ratios, cpu_ratios, on_rates, off_rates = [], [], [], []
    for r in range(rounds):
        order = [True, False] if r % 2 == 0 else [False, True]
        rate = {flag: kink_run(epochs, flag) for flag in order}
        ratios.append(rate[True][0] / rate[False][0])
        cpu_ratios.append(rate[True][1] / rate[False][1])
        on_rates.append(rate[True][0])
        off_rates.append(rate[False][0])
        print(f"  round {r + 1}: summary on {rate[True][0]:,.0f} steps/s, off "
              f"{rate[False][0]:,.0f} steps/s, on/off {ratios[-1]:.3f} wall-clock, "
              f"{cpu_ratios[-1]:.3f} by CPU time", flush=True)  # fmt: skip
    med = statistics.median
    print(f"kink, summary writer on/off = {med(ratios):.3f} wall-clock (median of {rounds}; "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}), {med(cpu_ratios):.3f} by CPU time; "
          f"on {med(on_rates):,.0f} steps/s, off {med(off_rates):,.0f} steps/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=10**7, help="largest run (default 10^7)")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds")
    parser.add_argument("--epochs", type=int, default=600, help="kink epochs per round")
    parser.add_argument("--repeat", type=int, default=3, help="tries per measure (best kept)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-viewing", action="store_true")
    args = parser.parse_args()
    sizes = [n for n in (10**5, 10**6, 10**7) if n <= args.max_n]
    if not args.skip_viewing:
        print("viewing a finished run of N logged steps (each measure in a fresh process):")
        with tempfile.TemporaryDirectory(prefix="torchdeck-long-runs-") as root:
            viewing(sizes, Path(root), args.repeat)
    if not args.skip_throughput:
        print("\ntraining throughput, kink (10 steps an epoch), summary writer on vs off:")
        sink_share(args.epochs)
        throughput(args.rounds, args.epochs)


if __name__ == "__main__":
    main()
