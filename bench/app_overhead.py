"""App overhead: what following a run in the app costs the training, and how the app keeps up.

Runs train in their own process (engine.procs.worker), started by the app or headless. In one
process:
1. throughput (samples/s, from the run's summary in run.toml) of the same run trained
   headless (engine.procs.worker.spawn, then nothing but waiting for the process to end) and
   followed by the app (App.run_test, 120x40, default tick and redraw pacing; the app starts
   the run with s), interleaved for several rounds; median ratio. Cases: the `digits-cnn`
   preset (the CNN case) and `kink`, both shortened with --set-style overrides.
2. the loss plot's redraw time with 10^3 and 10^6 steps of history (feed the bounded series,
   time the render function at the plot's size in a 120x40 terminal).
3. key latency while training: time from pilot.press to the action's handler running,
   pressing a plot toggle every 0.25 s during a kink run followed by the app.

    .venv/bin/python bench/app_overhead.py [--rounds 3] [--quick]

Targets: app/headless >= 0.95 on the CNN and >= 0.90 on kink; redraw < 20 ms at 10^6 steps
and <= 1.5x its cost at 10^3; keys handled within 100 ms while training.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.presets import resolve_config, save_preset

CASES = {
    # name: (preset, overrides, target ratio)
    "digits-cnn": ("digits-cnn", {"train.epochs": 60}, 0.95),  # ~7 s: past the start-up
    "kink": ("kink", {"train.epochs": 1500}, 0.90),
}
PLOT_SIZE = (76, 17)  # the loss plot's content area in a 120x40 terminal
APP_CPU: list[float] = []  # the app process's CPU use while its run trained, in cores


def _alive(pid: int) -> bool:
    from engine.rundir import process_alive

    return process_alive(pid)


def _samples_per_s(run_dir: str | Path) -> float:
    with open(Path(run_dir) / "run.toml", "rb") as fh:
        meta = tomllib.load(fh)
    if meta["run"]["status"] != "finished":
        raise SystemExit(f"{run_dir}: the run ended {meta['run']['status']}")
    return float(meta["summary"]["samples_per_s"])


@contextlib.contextmanager
def timed_action(cls: type, action: str) -> Iterator[list[float]]:
    """While inside, `cls.action_<action>` records when each call began (perf_counter): the
    key latency is that minus when pilot.press was called."""
    name = f"action_{action}"
    original = getattr(cls, name)
    handled: list[float] = []

    def timed(self: Any, *args: Any) -> Any:
        handled.append(time.perf_counter())
        return original(self, *args)

    setattr(cls, name, timed)
    try:
        yield handled
    finally:
        setattr(cls, name, original)


def headless(config: dict[str, Any], runs_dir: Path) -> float:
    """A worker process with nobody following it: the baseline."""
    from engine.jobs import TrainJob, start_detached

    started = start_detached(TrainJob(config, str(runs_dir)))
    while _alive(started.pid):
        time.sleep(0.05)
    return _samples_per_s(started.run_dir)


async def _follow_in_app(config: dict[str, Any], runs_dir: Path, presets: Path,
                         press_every_s: float | None = None) -> tuple[float, list[float]]:
    """Run `config` from the app (select it, press s) until it ends; (samples/s, latencies)."""
    import textual.app
    import textual.pilot

    from tui.app import make_app
    from tui.screens.main import MainScreen

    async def short_wait(min_sleep: float = 0.0, max_sleep: float = 1.0) -> None:
        # Pilot otherwise waits up to 1 s per key for the process to look idle; that wait is
        # the test harness's, not the app's
        await asyncio.sleep(0.01)

    textual.pilot.wait_for_idle = short_wait
    textual.app.wait_for_idle = short_wait
    name = config["name"]
    save_preset(config, presets / f"{name}.toml")
    app = make_app(runs_dir=runs_dir, preset_dirs=[presets])
    latencies: list[float] = []
    with timed_action(MainScreen, "toggle_log") as handled:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert app.query_one("PresetsPane").select(name)
            await pilot.pause()
            await pilot.press("s")
            run = app.controller
            cpu0 = wall0 = None
            while run.handle is None or run.run_state.active:
                if cpu0 is None and run.run_state.state == "running":
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                if press_every_s is not None and run.run_state.state == "running":
                    before = len(handled)
                    t0 = time.perf_counter()
                    await pilot.press("g")
                    if len(handled) > before:
                        latencies.append(handled[before] - t0)
                    await asyncio.sleep(press_every_s)
                else:
                    await asyncio.sleep(0.05)
            run_dir, pid = run.handle.run_dir, run.handle.pid
            if cpu0 is not None:
                APP_CPU.append((time.process_time() - cpu0) / (time.perf_counter() - wall0))
    while _alive(pid):
        await asyncio.sleep(0.05)
    return _samples_per_s(run_dir), latencies


def followed(config: dict[str, Any], runs_dir: Path, presets: Path) -> float:
    return asyncio.run(_follow_in_app(config, runs_dir, presets))[0]


def bench_throughput(rounds: int, quick: bool, tmp: Path) -> None:
    print(f"== throughput: headless worker vs followed by the app ({rounds} rounds, "
          "interleaved)")
    presets = tmp / "presets"
    presets.mkdir()
    for case, (preset, overrides, target) in CASES.items():
        if quick:
            overrides = {k: max(1, v // 3) for k, v in overrides.items()}
        config = resolve_config(preset, overrides)
        config["name"] = f"bench-{case}"
        ratios, heads, apps = [], [], []
        # warm-up, not counted: first convolutions, data caches, the first app start
        headless(config, tmp / "runs")
        followed(config, tmp / "runs", presets)
        for r in range(rounds):
            order = [headless, followed] if r % 2 == 0 else [followed, headless]
            got = {}
            for fn in order:
                args = (config, tmp / "runs") if fn is headless else (config, tmp / "runs",
                                                                       presets)
                got[fn.__name__] = fn(*args)
            heads.append(got["headless"])
            apps.append(got["followed"])
            ratios.append(got["followed"] / got["headless"])
        ratio = statistics.median(ratios)
        ok = "ok" if ratio >= target else "BELOW TARGET"
        sets = " ".join(f"--set {k}={v}" for k, v in overrides.items())
        print(f"{case} ({sets}), samples/s, median of {rounds}:")
        print(f"  headless worker    {statistics.median(heads):9.1f}   "
              f"(rounds {', '.join(f'{x:.1f}' for x in heads)})")
        print(f"  followed by app    {statistics.median(apps):9.1f}   "
              f"(rounds {', '.join(f'{x:.1f}' for x in apps)})")
        print(f"  the app's own CPU while following: "
              f"{statistics.median(APP_CPU[-rounds:]):.3f} cores (median)")
        print(f"  app / headless = {ratio:.3f} (rounds {', '.join(f'{x:.3f}' for x in ratios)};"
              f" target >= {target}) {ok}")


def bench_redraw() -> None:
    from tui.panes.loss_plot import LossModel
    from tui.plotting import warm_up

    warm_up()
    print(f"== loss plot redraw at {PLOT_SIZE[0]}x{PLOT_SIZE[1]} cells (median of 30)")
    results = {}
    for steps in (10**3, 10**6):
        model = LossModel()
        model.add_val(1, 1.0)
        chunk = 1000
        for first in range(1, steps + 1, chunk):
            model.add_losses(first, tuple(1.0 / (1 + (first + i) / 1000) for i in range(chunk)))
            if first % 50_000 == 1:
                model.add_val(first, 1.0 / (1 + first / 1000))
        times = {}
        for view in ("whole run", "recent window"):
            model.recent_only = view == "recent window"
            samples = []
            for _ in range(30):
                model.version += 1
                t0 = time.perf_counter()
                model.render(*PLOT_SIZE)
                samples.append(time.perf_counter() - t0)
            times[view] = statistics.median(samples) * 1000
        results[steps] = times["whole run"]
        print(f"{steps:>9,} steps: whole run {times['whole run']:.1f} ms, "
              f"recent window {times['recent window']:.1f} ms "
              f"(series buckets {len(model.train)}, bucket width {model.train.width})")
    ratio = results[10**6] / results[10**3]
    ok = "ok" if results[10**6] < 20 and ratio <= 1.5 else "BELOW TARGET"
    print(f"10^6 / 10^3 redraw cost: {ratio:.2f}x (targets: < 20 ms, <= 1.5x) {ok}")


def bench_keys(tmp: Path, quick: bool) -> None:
    print("== key latency while training (kink, a plot toggle pressed every 0.25 s)")
    config = resolve_config("kink", {"train.epochs": 300 if quick else 1000})
    config["name"] = "bench-keys"
    presets = tmp / "key-presets"
    presets.mkdir()
    _, lat = asyncio.run(_follow_in_app(config, tmp / "runs", presets, press_every_s=0.25))
    if not lat:
        print("no key presses landed during the run")
        return
    lat_ms = sorted(x * 1000 for x in lat)
    p95 = lat_ms[min(len(lat_ms) - 1, int(0.95 * len(lat_ms)))]
    ok = "ok" if lat_ms[-1] < 100 else "BELOW TARGET"
    print(f"{len(lat_ms)} presses: median {statistics.median(lat_ms):.1f} ms, p95 {p95:.1f} ms, "
          f"max {lat_ms[-1]:.1f} ms (target < 100 ms) {ok}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="shorter runs, one round")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            bench_throughput(rounds, args.quick, tmp)
            bench_redraw()
            bench_keys(tmp, args.quick)
        finally:  # no worker outlives the bench
            import sys

            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from tui_fakes import kill_workers

            kill_workers(tmp / "runs")
    print(f"(bench took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
