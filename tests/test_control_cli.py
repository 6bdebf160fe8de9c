"""`torchdeck pause|unpause|stop|set RUN` on a real detached worker, and on runs that are
not live; `runs` and `show` with a live run (the machine's figures)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.rundir import RunDir, process_alive


@pytest.fixture
def live_run(tmp_path):
    """A kink run training in a detached worker; killed at teardown if still alive."""
    from engine.jobs import TrainJob, start_detached
    from engine.presets import resolve_config

    config = resolve_config("kink", ["train.epochs=100000", "train.log_every_s=0.05"])
    started = start_detached(TrainJob(config, str(tmp_path / "runs")))
    try:
        yield started
    finally:
        if process_alive(started.pid):
            os.kill(started.pid, signal.SIGKILL)
        end = time.monotonic() + 30
        while process_alive(started.pid) and time.monotonic() < end:
            time.sleep(0.05)


def wait_until(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def status(run_dir) -> str:
    return str(RunDir(run_dir).record(check_checkpoints=False).status)


def test_pause_set_unpause_stop_a_detached_run(live_run, cli):
    runs, rid = str(live_run.run_dir.parent), live_run.run_id
    wait_until(lambda: b'"type":"steps"' in (live_run.run_dir / "events.jsonl").read_bytes())

    code, out, err = cli("runs", "--runs-dir", runs)
    assert code == 0, err
    row = next(ln for ln in out.splitlines() if ln.startswith(rid))
    assert f"running (alive, pid {live_run.pid})" in row
    live = out.split("\nlive:\n", 1)[1]
    assert rid in live and "rss " in live and "cpu " in live and "ram " in live

    code, out, err = cli("show", rid[:-2], "--runs-dir", runs)  # a unique prefix
    assert code == 0, err
    assert "machine: cpu " in out and "rss " in out
    assert "  step " in out and "steps/s" in out and "config (the resolved preset):" in out

    code, out, err = cli("pause", rid, "--runs-dir", runs)
    assert code == 0, err
    assert f"run {rid} paused" in out and status(live_run.run_dir) == "paused"
    code, out, _ = cli("pause", rid, "--runs-dir", runs)
    assert code == 0 and "already paused" in out

    code, out, err = cli("set", rid, "optim.lr=0.0002", "--runs-dir", runs)
    assert code == 0, err
    assert "optim.lr 0.001 -> 0.0002 at step" in out
    bad_values = [
        ("train.epochs=3", "only optim.lr"),
        ("optim.lr=-1", "positive"),
        ("optim.lr=fast", "expected a number"),
        ("lr", "expected optim.lr=VALUE"),
    ]
    for bad, words in bad_values:
        code, out, err = cli("set", rid, bad, "--runs-dir", runs)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (bad, err)

    code, out, err = cli("unpause", rid, "--runs-dir", runs)
    assert code == 0 and "training again" in out, err
    assert status(live_run.run_dir) == "running"

    code, out, err = cli("stop", rid, "--runs-dir", runs)
    assert code == 0, err
    assert f"stopping run {rid}" in out and f"run {rid} stopped at step" in out
    assert status(live_run.run_dir) == "stopped"
    wait_until(lambda: not process_alive(live_run.pid))

    for command in (["pause"], ["unpause"], ["stop"], ["set", "optim.lr=0.1"]):
        code, out, err = cli(command[0], rid, *command[1:], "--runs-dir", runs)
        assert code == 2 and "is not live (stopped)" in err, (command, err)
        assert len(err.strip().splitlines()) == 1

    code, out, err = cli("show", rid, "--runs-dir", runs)
    assert "live changes: 1" in out and "optim.lr 0.001 -> 0.0002" in out
    assert "machine:" not in out
    code, out, err = cli("export", rid, "--json", "--runs-dir", runs)
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["lr"] for r in rows} == {0.001, 0.0002}
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))


def test_a_killed_run_is_not_live(tmp_path, cli):
    from helpers import train

    _, _, run_path = train("neuron-linear", tmp_path / "runs")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    run = RunDir(run_path)
    meta = run.read_meta()
    meta["run"]["status"], meta["run"]["pid"] = "running", proc.pid
    run.write_meta()
    code, out, err = cli("stop", run.id, "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "killed" in err and f"torchdeck resume {run.id}" in err
    code, out, err = cli("runs", "--runs-dir", str(tmp_path / "runs"))
    assert "killed" in out and "live:" not in out
    code, out, err = cli("pause", "nope", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "no run 'nope'" in err
