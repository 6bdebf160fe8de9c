"""`torchdeck sweep`, `sweeps` and `queue`: one run per combination, a queue, a sweep that
survives being killed."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.rundir import RunDir, list_runs, process_alive
from engine.sweep import create_sweep, list_sweeps, plan_sweep, read_sweep


def wait_for(check: Callable[[], object], what: str, timeout_s: float = 120.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _runs(runs_dir: Path) -> list[RunDir]:
    return [r for r in list_runs(runs_dir) if r.path.name != "sweeps"]


@pytest.fixture
def cleanup(runs_dir: Path):
    """Whatever a test leaves running (a sweep runner, a worker) is killed and reaped."""
    yield
    pids = []
    for sweep in list_sweeps(runs_dir):
        if sweep.runner_alive:
            pids.append(sweep.info["runner_pid"])
    for run in _runs(runs_dir):
        record = run.record(check_checkpoints=False)
        if record.live:
            pids.append(record.info["pid"])
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        wait_for(lambda p=pid: not process_alive(p), f"pid {pid} to end", 20)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:  # reap the workers this process started
            pass
    assert not pids, f"the test left processes running: {pids}"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--grid", "optim.lr=0.001,abc"], "--grid optim.lr=abc: [optim] lr: expected a number"),
        (["--grid", "optim.lrx=1,2"], "--grid optim.lrx=1: unknown key 'optim.lrx'"),
        (["--grid", "optim.lr"], "--grid optim.lr: expected key=v1,v2"),
        (["--grid", "optim.lr=0.1,,0.2"], "an empty value"),
        (["--grid", "optim.lr=0.1", "--grid", "optim.lr=0.2"], "--grid optim.lr: given twice"),
        ([], "give at least one --grid"),
        (["--grid", "optim.lr=0.1", "--parallel", "0"], "--parallel 0: expected 1 or more"),
        (["--grid", "optim.lr=0.1", "--set", "train.nope=1"], "unknown key 'train.nope'"),
        (
            ["--grid", "optim.name=sgd,adam", "--grid", "optim.momentum=0.9"],
            "--grid combination optim.name=adam, optim.momentum=0.9:",
        ),
    ],
)
def test_bad_sweeps_are_one_line_exit_2_and_start_nothing(cli, runs_dir, args, words):
    code, out, err = cli("sweep", "kink", *args, "--runs-dir", str(runs_dir))
    assert code == 2, out + err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not runs_dir.exists()


def test_bad_refs_are_one_line_exit_2(cli, runs_dir):
    for args, words in [
        (["sweep", "show", "nope"], "no sweep 'nope'"),
        (["sweep", "resume"], "sweep resume: expected one sweep id"),
        (["sweeps", "nope"], "no sweep 'nope'"),
        (["queue", "move", "nope:1", "up"], "no sweep 'nope'"),
        (["queue", "move", "nope", "up"], "name a combination, SWEEP:N"),
        (["queue", "cancel", "x:y"], "expected SWEEP:N"),
        (["queue", "shuffle"], "expected `queue`"),
    ]:
        code, _, err = cli(*args, "--runs-dir", str(runs_dir))
        assert code == 2 and words in err, (args, err)
        assert len(err.strip().splitlines()) == 1


def test_a_sweep_leaves_one_finished_run_per_combination_and_a_table(cli, runs_dir, cleanup):
    code, out, err = cli(
        "sweep", "kink", "--grid", "optim.lr=0.001,0.002", "--set", "train.epochs=20",
        "--foreground", "--runs-dir", str(runs_dir),
    )  # fmt: skip
    assert code == 0, out + err
    runs = _runs(runs_dir)
    records = [r.record() for r in runs]
    assert [r.effective for r in records] == ["finished", "finished"]
    assert sorted(r.config["optim"]["lr"] for r in records) == [0.001, 0.002]
    assert all(r.summary["steps"] == 200 for r in records)
    (sweep,) = list_sweeps(runs_dir)
    assert [c["status"] for c in sweep.combos] == ["done", "done"]
    assert {c["run"] for c in sweep.combos} == {r.id for r in runs}
    # the comparison table: the varying key, status, final loss; sorted by final_loss
    lines = out.splitlines()
    head = lines.index(next(x for x in lines if x.startswith("n  optim.lr")))
    assert "sorted by final_loss" in lines[head - 1]
    rows = [x.split() for x in lines[head + 1 : head + 3]]
    losses = [float(r[4]) for r in rows]
    assert losses == sorted(losses) and {r[2] for r in rows} == {"finished"}
    code, out, _ = cli("sweeps", sweep.id[:12], "--sort", "n", "--runs-dir", str(runs_dir))
    assert code == 0 and [x.split()[1] for x in out.splitlines()[2:4]] == ["0.001", "0.002"]
    code, out, _ = cli("sweeps", "--runs-dir", str(runs_dir))
    assert code == 0 and f"{sweep.id}  finished  2/2" in out
    code, out, _ = cli("queue", "--runs-dir", str(runs_dir))
    assert code == 0 and "no waiting runs" in out


def test_a_killed_sweep_finishes_the_rest_without_redoing_finished_runs(cli, runs_dir, cleanup):
    command = (
        "sweep", "kink", "--grid", "train.epochs=20,1000,10",
        "--set", "train.checkpoint_every_s=0.2", "--runs-dir", str(runs_dir),
    )  # fmt: skip
    code, out, err = cli(*command)
    assert code == 0, err
    assert "in the background" in out and "torchdeck sweeps" in out
    (sweep,) = list_sweeps(runs_dir)
    runner = sweep.info["runner_pid"]

    def second_run_checkpointed() -> RunDir | None:
        combo = read_sweep(sweep.path).combos[1]
        if combo["status"] == "running" and combo.get("run"):
            run = RunDir(runs_dir / combo["run"])
            return run if run.last_ckpt.exists() and run.record().live else None
        return None

    run2 = wait_for(second_run_checkpointed, "run 2 to train and checkpoint")
    first = read_sweep(sweep.path).combos[0]["run"]
    worker = run2.record().info["pid"]
    os.kill(runner, signal.SIGKILL)  # the runner first: it must not see its run end
    wait_for(lambda: not process_alive(runner), "the runner to die")
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not process_alive(worker), "the worker to die")
    with contextlib.suppress(ChildProcessError):
        os.waitpid(runner, 0)
    assert run2.record().effective == "killed"
    code, out, _ = cli("sweeps", sweep.id, "--runs-dir", str(runs_dir))
    assert "(stopped; 1 waiting, 1 running, 1 done)" in out and "killed" in out

    code, out, err = cli(*command, "--foreground")  # the same sweep again
    assert code == 0, out + err
    assert f"an unfinished identical sweep exists: {sweep.id} (1 of 3 done): resuming it" in out
    assert f"combination 2 resumed: run {run2.id}" in out
    assert "combination 1" not in out  # finished: not redone
    runs = {r.id: r.record() for r in _runs(runs_dir)}
    assert len(runs) == 3 and first in runs and run2.id in runs
    assert all(r.effective == "finished" for r in runs.values())
    assert runs[run2.id].info["resumed"] == 1 and runs[run2.id].summary["steps"] == 10_000
    assert "resumed" not in runs[first].info
    assert [c["status"] for c in read_sweep(sweep.path).combos] == ["done"] * 3
    code, out, _ = cli("sweep", "resume", sweep.id, "--runs-dir", str(runs_dir))
    assert code == 0 and "nothing left to run" in out


def test_parallel_2_trains_two_runs_at_once(cli, runs_dir, cleanup):
    code, out, err = cli(
        "sweep", "kink", "--grid", "optim.lr=0.001,0.002", "--set", "train.epochs=1500",
        "--parallel", "2", "--runs-dir", str(runs_dir),
    )  # fmt: skip
    assert code == 0, err
    assert "2 runs, 2 at a time" in out
    (sweep,) = list_sweeps(runs_dir)

    def both_alive() -> bool:
        combos = read_sweep(sweep.path).combos
        runs = [RunDir(runs_dir / c["run"]) for c in combos if c.get("run")]
        return len(runs) == 2 and all(r.record(check_checkpoints=False).live for r in runs)

    wait_for(both_alive, "two runs training at once")
    wait_for(lambda: read_sweep(sweep.path).state == "finished", "the sweep to finish", 180)
    assert [r.record().effective for r in _runs(runs_dir)] == ["finished", "finished"]
    from engine.devices import available_devices
    from engine.sweep import cpu_count

    if available_devices() == ["cpu"]:  # two at once on the CPU: the cores are shared out
        threads = [r.record().config["train"].get("threads") for r in _runs(runs_dir)]
        assert threads == [max(1, cpu_count() // 2)] * 2
        assert "train.threads=" in (sweep.path / "sweeper.log").read_text()


@pytest.mark.parametrize(
    "device, threads, parallel, devices, keys, on_cpu, expected",
    [
        ("cpu", 0, 4, [None] * 4, (), None, 4),  # 16 CPUs, 4 at a time: 4 each
        ("cpu", 0, 3, [None] * 3, (), None, 5),
        ("cpu", 0, 32, [None] * 32, (), None, 1),  # never fewer than one
        ("cpu", 0, 1, [None], (), None, None),  # one at a time: torch's default
        ("cpu", 6, 4, [None] * 4, (), None, None),  # the user chose threads
        ("cpu", 0, 4, [None] * 4, ("train.threads",), None, None),  # ... in the grid
        ("cuda", 0, 2, [None] * 2, (), None, None),  # on a GPU: leave it alone
        ("auto", 0, 2, ["cuda:0", "cuda:1"], (), None, None),  # one GPU per slot
        ("auto", 0, 2, [None] * 2, (), True, 8),  # auto on a machine without GPUs
        ("auto", 0, 2, [None] * 2, (), False, None),  # auto on one GPU
    ],
)
def test_parallel_sweeps_on_the_cpu_share_the_cores_out(
    device, threads, parallel, devices, keys, on_cpu, expected
):
    from engine.sweep import threads_cap

    config = {"train": {"device": device, "threads": threads}}
    assert threads_cap(config, parallel, devices, keys, cpus=16, on_cpu=on_cpu) == expected


def test_queue_lists_reorders_and_cancels_waiting_runs(cli, runs_dir, cleanup):
    plan = plan_sweep(
        "kink", ["optim.lr=0.001,0.002,0.003,0.004"], ["train.epochs=5"], runs_dir=runs_dir
    )
    sweep = create_sweep(plan)
    rd = ("--runs-dir", str(runs_dir))

    def waiting() -> list[int]:
        code, out, _ = cli("queue", *rd)
        assert code == 0
        return [int(line.split()[0].rpartition(":")[2]) for line in out.splitlines()[1:]]

    assert waiting() == [1, 2, 3, 4]
    code, out, _ = cli("queue", "move", f"{sweep.id}:3", "first", *rd)
    assert code == 0 and "waiting order: 3, 1, 2, 4" in out
    assert cli("queue", "move", f"{sweep.id}:3", "down", *rd)[0] == 0
    assert waiting() == [1, 3, 2, 4]
    assert cli("queue", "cancel", f"{sweep.id}:2", *rd)[1].strip() == f"cancelled: {sweep.id}:2"
    assert cli("queue", "cancel", f"{sweep.id}:4", *rd)[0] == 0
    assert waiting() == [1, 3]
    code, _, err = cli("queue", "cancel", f"{sweep.id}:2", *rd)
    assert code == 2 and "is cancelled: nothing to cancel" in err
    code, _, err = cli("queue", "move", f"{sweep.id}:9", "up", *rd)
    assert code == 2 and "has no combination 9 (1..4)" in err

    code, out, err = cli("sweep", "resume", sweep.id, "--foreground", *rd)
    assert code == 0, out + err
    started = [line.split()[2] for line in out.splitlines() if " started: run " in line]
    assert started == ["1", "3"]
    combos = read_sweep(sweep.path).combos
    assert [(c["n"], c["status"]) for c in combos] == [
        (1, "done"), (3, "done"), (2, "cancelled"), (4, "cancelled")
    ]  # fmt: skip
    assert len(_runs(runs_dir)) == 2
    code, out, _ = cli("queue", "cancel", sweep.id, *rd)
    assert code == 0 and "nothing left to cancel" in out
