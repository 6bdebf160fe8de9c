"""The run summary (engine/summary.py): exact per bucket, crash-safe, built once for old
runs, resumed runs' later values win; History-mode following; attach --plain's summary."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from engine import events as ev
from engine.export import step_rows
from engine.handle import FollowHandle
from engine.rundir import EVENTS_FILE, RunDir
from engine.summary import (
    BASE,
    SUMMARY_DIR,
    SummaryWriter,
    _load_meta,
    bucket_size,
    ensure_summary,
    history_of,
    read_curve,
)

ROOT = Path(__file__).resolve().parents[1]


def started(run: RunDir, total: int, start_step: int = 0) -> ev.RunStarted:
    return ev.RunStarted(
        run_id=run.id, preset="synthetic", run_dir=str(run.path), device="cpu", task="regression",
        total_steps=total, total_epochs=max(1, total // 100), steps_per_epoch=100, batch_size=2,
        start_step=start_step, lr=0.01,
    )  # fmt: skip


def steps(first: int, losses: np.ndarray, lr: float = 0.01) -> ev.StepMetrics:
    return ev.StepMetrics(
        first_step=first, epoch=(first - 1) // 100 + 1, losses=tuple(losses.tolist()), lr=lr,
        elapsed_s=0.1, samples_per_s=1.0, steps_per_s=1.0,
    )  # fmt: skip


def new_run(tmp_path: Path) -> RunDir:
    return RunDir.create(tmp_path / "runs", "synthetic", {}, "cpu")


def write_log(run: RunDir, items: list[ev.Event], sink=None, finish: bool = True) -> None:
    for event in items:
        run.append_event(event)
        if sink is not None:
            sink(event)
    run.flush_events()
    if finish:
        run.update("finished")
    run.close()


def logged_run(rng: np.random.Generator, run: RunDir, n: int, chunk: int = 137) -> list[ev.Event]:
    """RunStarted, StepMetrics of uneven sizes (with spikes and lr changes), an epoch every
    100 steps, Finished."""
    losses = rng.exponential(1.0, n) * np.linspace(2, 0.1, n)
    losses[rng.integers(0, n, 5)] = 1e3  # spikes a mean would hide
    out: list[ev.Event] = [started(run, n)]
    step, epoch = 0, 0
    while step < n:
        m = min(n - step, int(rng.integers(1, chunk)))
        out.append(steps(step + 1, losses[step : step + m], lr=0.01 if step < n // 2 else 0.005))
        step += m
        while (epoch + 1) * 100 <= step:
            epoch += 1
            out.append(ev.EpochEnd(epoch=epoch, step=epoch * 100, train_loss=0.5,
                                   val_loss=0.25 / epoch, metrics={"accuracy": 0.9}))  # fmt: skip
    out.append(ev.Finished(status="finished", step=n))
    return out


def direct(losses: np.ndarray, per: int) -> dict[str, np.ndarray]:
    k = -(-len(losses) // per)
    padded = np.full(k * per, np.nan)
    padded[: len(losses)] = losses
    groups = padded.reshape(k, per)
    last = np.array([g[~np.isnan(g)][-1] for g in groups])
    return {
        "min": np.nanmin(groups, axis=1),
        "max": np.nanmax(groups, axis=1),
        "mean": np.nanmean(groups, axis=1),
        "last": last,
    }


def exported(run: RunDir) -> np.ndarray:
    return np.array([r[2] for r in step_rows(run)])


def assert_exact(curve, losses: np.ndarray) -> None:
    assert curve.last_step == len(losses)
    want = direct(losses, curve.per_point)
    for key in ("min", "max", "last"):
        assert getattr(curve, key).tobytes() == want[key].tobytes(), key
    np.testing.assert_allclose(curve.mean, want["mean"], rtol=1e-12)
    n_tail = len(curve.tail_losses)
    assert curve.tail_losses.tobytes() == losses[len(losses) - n_tail :].tobytes()


@pytest.mark.parametrize("max_points", [5000, 300, 40, 3])
def test_summary_is_exact_at_every_level(tmp_path, max_points):
    run = new_run(tmp_path)
    rng = np.random.default_rng(1)
    writer = SummaryWriter(run.path)
    items = logged_run(rng, run, 4321)
    write_log(run, items[:-1], sink=writer, finish=False)
    run.append_event(items[-1])
    run.flush_events()
    writer(items[-1])  # the end: commits, the log holds every line
    meta = _load_meta(run.path)  # the writer's offsets are the log's: trusted
    assert meta is not None and meta["offset"] == (run.path / EVENTS_FILE).stat().st_size
    write_log(run, [])
    losses = exported(run)
    curve = read_curve(run.path, max_points=max_points)
    assert len(curve.steps) <= max_points
    assert curve.per_point == (1 if max_points >= 4321 else curve.per_point)
    assert_exact(curve, losses)
    assert curve.steps[-1] == 4321
    assert list(curve.lr) == [0.01, 0.005]
    assert curve.n_epochs == 43 and curve.metrics["accuracy"][0] == 0.9
    # the writer's summary is the one a rebuild from the log gives
    for path in (run.path / SUMMARY_DIR).iterdir():
        path.unlink()
    rebuilt = read_curve(run.path, max_points=max_points)
    for key in ("steps", "min", "max", "mean", "last", "lr_steps", "epoch_steps", "val_loss"):
        assert getattr(rebuilt, key).tobytes() == getattr(curve, key).tobytes(), key


def test_the_finest_level_within_max_points_is_read(tmp_path):
    run = new_run(tmp_path)
    n = 64 * 40 + 17
    write_log(run, [started(run, n), steps(1, np.arange(n, dtype=float))])
    curve = read_curve(run.path, max_points=41)
    assert curve.per_point == BASE and len(curve.steps) == 41  # 40 buckets and the partial
    assert curve.last[-1] == n - 1 and curve.min[-1] == 64 * 40
    assert read_curve(run.path, max_points=40).per_point == bucket_size(2)


def test_torn_and_stale_summaries_are_noticed_and_rebuilt(tmp_path):
    run = new_run(tmp_path)
    rng = np.random.default_rng(2)
    write_log(run, logged_run(rng, run, 3000), sink=SummaryWriter(run.path))
    losses = exported(run)
    folder = run.path / SUMMARY_DIR
    # a torn tail past what meta.json commits: never trusted
    with open(folder / "raw.f64", "ab") as fh:
        fh.write(b"\x7f" * 13)
    with open(folder / "l1.f64", "ab") as fh:
        fh.write(b"\xff" * 40)
    assert_exact(read_curve(run.path, max_points=100), losses)
    assert_exact(read_curve(run.path, max_points=5000), losses)
    # files shorter than meta.json says (torn below the commit): rebuilt from the log
    raw = folder / "raw.f64"
    os.truncate(raw, raw.stat().st_size // 2)
    assert_exact(read_curve(run.path, max_points=5000), losses)
    assert raw.stat().st_size == 16 + 8 * len(losses)
    # a torn meta slot: the other one is used; both torn: rebuilt
    meta = folder / "meta"
    with open(meta, "r+b") as fh:
        fh.seek(40)
        fh.write(b"#")
    assert_exact(read_curve(run.path, max_points=100), losses)
    meta.write_bytes(meta.read_bytes()[:30])
    assert_exact(read_curve(run.path, max_points=100), losses)
    # a summary of another log (a foreign or stale one)
    with open(run.path / EVENTS_FILE, "r+b") as fh:
        fh.seek(-3, os.SEEK_END)
        fh.write(b"} \n")  # the log's last line changed under the summary
    assert _load_meta(run.path) is None
    assert_exact(read_curve(run.path, max_points=100), losses)
    # a bad header
    with open(folder / "l1.f64", "r+b") as fh:
        fh.write(b"JUNK")
    assert_exact(read_curve(run.path, max_points=100), losses)


def test_an_old_run_is_summarised_once_streaming(tmp_path):
    run = new_run(tmp_path)
    rng = np.random.default_rng(3)
    n = 200_000
    items = [started(run, n)]
    items += [steps(s + 1, rng.random(1000)) for s in range(0, n, 1000)]
    items.append(ev.Finished(status="finished", step=n))
    write_log(run, items)  # no summary writer: a run from before summaries
    log = run.path / EVENTS_FILE
    assert not (run.path / SUMMARY_DIR).exists()
    losses = exported(run)
    tracemalloc.start()
    curve = read_curve(run.path, max_points=1000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert_exact(curve, losses)
    assert peak < log.stat().st_size / 8, peak  # a line at a time, not the log
    meta = _load_meta(run.path)
    assert meta["offset"] == log.stat().st_size and meta["n"] == n
    # the next open reads the summary, not the log: spoil the log's start, same length
    with open(log, "r+b") as fh:
        fh.seek(200)
        fh.write(b"x" * 1000)
    again = read_curve(run.path, max_points=1000)
    assert again.min.tobytes() == curve.min.tobytes()


def resumed_log(run: RunDir, rng: np.random.Generator) -> list[ev.Event]:
    """A run killed at step 900 (checkpoint at 600), resumed, killed at 1300 (checkpoint at
    1000), resumed again to 1500; plus a StepMetrics that goes back by itself."""
    a = rng.random(900)
    b = rng.random(700) + 10
    c = rng.random(500) + 20
    return [
        started(run, 1500),
        steps(1, a[:500], lr=0.1), steps(501, a[500:]),
        ev.EpochEnd(epoch=7, step=700, train_loss=1.0),
        started(run, 1500, start_step=600),
        steps(601, b[:300], lr=0.3), steps(801, b[200:]),  # re-logs 801..900 of its own
        ev.EpochEnd(epoch=7, step=700, train_loss=2.0),
        started(run, 1500, start_step=1000),
        steps(1001, c),
        ev.Finished(status="finished", step=1500),
    ]  # fmt: skip


@pytest.mark.parametrize("how", ["writer", "writer-per-process", "rebuild"])
def test_a_resumed_runs_later_values_win(tmp_path, how):
    run = new_run(tmp_path)
    items = resumed_log(run, np.random.default_rng(4))
    if how == "writer":
        write_log(run, items, sink=SummaryWriter(run.path))
    elif how == "writer-per-process":  # a writer per process: the first killed (no close)
        w = SummaryWriter(run.path)
        for i, event in enumerate(items):
            if event.type == "run_started" and i:
                run.flush_events()
                w.summary = None  # dies: its lock goes with its process
                os.close(w._fd)
                w._fd = None
                w = SummaryWriter(run.path)
            run.append_event(event)
            w(event)
        write_log(run, [])
    else:
        write_log(run, items)
    losses = exported(run)
    assert len(losses) == 1500
    for max_points in (5000, 30):
        assert_exact(read_curve(run.path, max_points=max_points), losses)
    curve = read_curve(run.path)
    assert list(curve.lr_steps) == [1, 501, 601, 801] and list(curve.lr) == [0.1, 0.01, 0.3, 0.01]
    assert list(curve.train_loss) == [2.0]


KILLED_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from pathlib import Path
    from engine import events as ev
    from engine.rundir import RunDir
    from engine.summary import SummaryWriter
    sys.path.insert(0, "tests")
    from test_summary import started, steps
    run = RunDir(Path(sys.argv[1])); run.read_meta()
    resume = int(sys.argv[2])
    w = SummaryWriter(run.path)
    rng = np.random.default_rng(resume)
    first = [started(run, 10**9, start_step=resume)]
    for e in first:
        run.append_event(e); w(e)
    step = resume
    while True:
        e = steps(step + 1, rng.random(int(rng.integers(1, 300))))
        step = e.last_step
        run.append_event(e); w(e)
        if rng.random() < 0.3:
            run.flush_events()
    """
)


def test_kill_9_at_any_moment_leaves_a_summary_that_matches_the_log(tmp_path):
    run = new_run(tmp_path)
    log = run.path / EVENTS_FILE
    resume = 0
    for round_ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(run.path), str(resume)], cwd=ROOT
        )
        try:
            want = log.stat().st_size + 40_000 * (round_ + 1)
            deadline = time.monotonic() + 60
            while log.stat().st_size < want and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        losses = exported(run)
        for max_points in (100_000, 50):
            assert_exact(read_curve(run.path, max_points=max_points), losses)
        resume = len(losses) // 2  # resumes from a checkpoint half-way back


def test_history_mode_on_a_finished_run(tmp_path):
    run = new_run(tmp_path)
    rng = np.random.default_rng(5)
    write_log(run, logged_run(rng, run, 3000), sink=SummaryWriter(run.path))
    losses = exported(run)

    async def follow():
        return [e async for e in FollowHandle(run.path, poll_s=0.01, history="summary").events()]

    got = asyncio.run(asyncio.wait_for(follow(), timeout=30))
    assert len(got) == 1 and isinstance(got[0], ev.History)
    h = got[0]
    assert h.last_step == 3000 and h.offset == (run.path / EVENTS_FILE).stat().st_size
    assert [e.type for e in h.events] == ["run_started", "epoch", "finished"]
    assert h.first_loss == losses[0] and min(h.loss_min) == losses.min()
    assert h.tail_losses[-1] == losses[-1] and h.val_loss[-1] == 0.25 / 30
    # the default is unchanged: every event
    events = asyncio.run(asyncio.wait_for(_all(FollowHandle(run.path, poll_s=0.01)), 30))
    assert events[0].type == "run_started" and events[-1].type == "finished"


async def _all(handle):
    return [e async for e in handle.events()]


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_history_mode_on_a_live_run_then_its_new_events(tmp_path):
    run = new_run(tmp_path)  # run.toml: running, pid = this process: alive
    rng = np.random.default_rng(6)
    losses = rng.random(5000)
    writer = SummaryWriter(run.path)
    for event in (started(run, 5000), steps(1, losses[:2000]), steps(2001, losses[2000:3000])):
        run.append_event(event)
        writer(event)
    run.flush_events()
    handle = FollowHandle(run.path, poll_s=0.01, history="summary")
    try:
        seen: list[ev.Event] = []
        wait_until(lambda: seen.extend(handle.drain()) or seen)
        h = seen[0]
        assert isinstance(h, ev.History) and h.last_step == 3000
        assert h.tail_losses[-1] == losses[2999]
        for event in (steps(3001, losses[3000:4000]), steps(4001, losses[4000:])):
            run.append_event(event)
            writer(event)
            run.flush_events()
        run.append_event(ev.Finished(status="finished", step=5000))
        run.update("finished")
        run.close()
        wait_until(lambda: seen.extend(handle.drain()) or handle.ended)
        seen.extend(handle.drain())
    finally:
        handle.close()
    later = [e for e in seen[1:] if isinstance(e, ev.StepMetrics)]
    assert later[0].first_step == 3001 and sum(len(e.losses) for e in later) == 2000
    assert seen[-1].type == "finished"
    # the writer's last commit waited for the log's flush; the next open catches up
    assert_exact(read_curve(run.path, max_points=100), losses)


def test_history_of_a_run_without_events(tmp_path):
    run = new_run(tmp_path)
    h, last = history_of(run.path)
    assert h.last_step == 0 and h.steps == () and h.events == () and last is None
    ensure_summary(run.path)


def test_attach_plain_prints_the_history_as_a_summary(tmp_path, cli):
    run = new_run(tmp_path)
    rng = np.random.default_rng(7)
    items = logged_run(rng, run, 20_000, chunk=400)
    write_log(run, items)  # an old run: summarised on this first open
    losses = exported(run)
    code, out, _ = cli("attach", run.id, "--plain", "--runs-dir", str(tmp_path / "runs"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"run {run.id}: synthetic on cpu")
    assert "history: 20,000 steps, 200 epochs" in lines
    assert any(line.startswith(f"loss: first {losses[0]:.6g}  min {losses.min():.6g}")
               for line in lines)  # fmt: skip
    assert "lr: 0.01 (step 1) -> 0.005 (step" in out
    assert "finished after 20000 steps" in lines
    assert len(lines) < 10, out  # not a line per logged event


def test_a_real_run_with_the_writer_as_its_hook(tmp_path):
    """The run-folder writer feeds the summary writer right after each log line: its idea of
    each line is the log's, byte for byte, so its summary is trusted as it stands."""
    from engine.api import run_sync
    from engine.presets import resolve_config
    from engine.summary import _json_line

    def same_line(event):
        assert _json_line(event) == (ev.event_to_json(event) + "\n").encode()

    seen: list[ev.Event] = []
    run_sync(resolve_config("neuron-linear"), tmp_path / "runs", sinks=[same_line, seen.append])
    run_path = Path(seen[0].run_dir)
    assert {"params", "steps", "epoch", "finished"} <= {e.type for e in seen}
    meta = _load_meta(run_path)
    assert meta is not None and meta["offset"] > 0  # committed, and trusted
    losses = exported(RunDir(run_path))
    assert_exact(read_curve(run_path, max_points=10), losses)
    h, last = history_of(run_path)
    assert last.type == "finished" and h.events[0].type == "run_started"
