"""The life cycle of a multi-process run, tried as a user would: Ctrl-C and SIGTERM stop it
with a checkpoint, killing the launcher leaves nothing behind, and a run with dropout
stopped and resumed in two processes ends bit for bit where an uninterrupted one does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
from dist_helpers import (
    ROOT,
    Launched,
    job_leftovers,
    logged_steps,
    only_run,
    run_meta,
    wait_for,
)

from engine.checkpoint import load_checkpoint

START_S = 240  # torchrun, two ranks and the digits on a loaded 2-core machine


def torchdeck(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def start(tmp_path, runs, *sets: str) -> Launched:
    args = ["train", "digits-cnn", "--nproc", "2", "--runs-dir", str(runs)]
    for s in sets:
        args += ["--set", s]
    return Launched(args, tmp_path / "out")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_run_with_a_checkpoint(tmp_path, sig):
    runs = tmp_path / "runs"
    before = set(job_leftovers())
    run = start(tmp_path, runs, "train.epochs=500")
    try:
        wait_for(lambda: logged_steps(runs) >= 20, START_S, "the first logged steps")
        run.signal(sig)  # the whole process group, as a terminal does
        assert run.wait(timeout=120) == 0, run.err()[-3000:]
        assert "stopping at the next sync point" in run.err()
        folder = only_run(runs)
        meta = run_meta(folder)
        assert meta["run"]["status"] == "stopped", meta
        ckpt = load_checkpoint(folder / "checkpoints" / "last.pt")
        assert ckpt["step"] == meta["summary"]["steps"] > 0
        assert len(ckpt["rng"]["ranks"]) == 2  # every rank's random streams
        wait_for(lambda: not run.processes(), 10, "the agent and the ranks to end")
        assert set(job_leftovers()) <= before
        if sig == signal.SIGINT:
            # it resumes, here in one process: allowed, and said in one line
            epochs = ckpt["epoch"] + 1
            proc = torchdeck("resume", folder.name, "--set", f"train.epochs={epochs}",
                             "--runs-dir", str(runs))  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert "written by 2 processes and continues in 1" in proc.stderr
            meta = run_meta(folder)
            assert meta["run"]["status"] == "finished"
            assert meta["summary"]["steps"] == epochs * 45
    finally:
        run.end()


def test_killing_the_launcher_leaves_no_process_and_no_temp_folder(tmp_path):
    runs = tmp_path / "runs"
    before = set(job_leftovers())
    run = start(tmp_path, runs, "train.epochs=500")
    try:
        wait_for(lambda: logged_steps(runs) >= 20, START_S, "the first logged steps")
        assert len(run.processes()) >= 4  # launcher, agent, two ranks
        assert set(job_leftovers()) - before  # the job folder, while it runs
        run.signal(signal.SIGKILL)  # kill -9 of the launcher's process group
        wait_for(lambda: not run.processes(), 10, "every process of the run to end")
        wait_for(lambda: set(job_leftovers()) <= before, 10, "the job folder to be removed")
        proc = torchdeck("runs", "--runs-dir", str(runs))
        assert proc.returncode == 0
        row = proc.stdout.splitlines()[1].split()
        assert row[1] == "killed", proc.stdout
    finally:
        run.end()


def test_dropout_run_stopped_and_resumed_in_two_processes_is_bitwise_equal(tmp_path):
    """digits-cnn has Dropout(0.25): each rank draws its own masks (its own stream), and
    the checkpoint holds every rank's states, so the resumed run draws what the
    uninterrupted one draws."""
    sets, total = ["train.epochs=4"], 4 * 45
    whole = start(tmp_path, tmp_path / "whole", *sets)
    cut = None
    try:
        assert whole.wait(timeout=300) == 0, whole.err()[-3000:]
        runs = tmp_path / "cut"
        cut = start(tmp_path, runs, *sets)
        # the run is short: its agent and ranks are frozen while the stop is asked, so a
        # loaded machine cannot let it finish first (the stop still lands at a sync point)
        wait_for(lambda: logged_steps(runs) >= 20, START_S, "the first logged steps", 0.02)
        others = [pid for pid in cut.processes() if pid != cut.pid]  # the agent, the ranks
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            cut.signal(signal.SIGINT)
            wait_for(lambda: "stopping at the next sync point" in cut.err(), 60, "the stop")
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)
        assert cut.wait(timeout=120) == 0, cut.err()[-3000:]
        folder = only_run(runs)
        mid = load_checkpoint(folder / "checkpoints" / "last.pt")
        assert run_meta(folder)["run"]["status"] == "stopped" and 0 < mid["step"] < total
        states = mid["rng"]["ranks"]
        assert not torch.equal(states[0]["torch"], states[1]["torch"])  # streams of their own
        proc = torchdeck("resume", folder.name, "--nproc", "2", "--runs-dir", str(runs))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "continues in" not in proc.stderr  # the same world size: nothing to say
        got = load_checkpoint(folder / "checkpoints" / "last.pt")
        want = load_checkpoint(only_run(tmp_path / "whole") / "checkpoints" / "last.pt")
        assert got["step"] == want["step"] == total
        for name, tensor in want["model"].items():
            assert torch.equal(got["model"][name], tensor), name
    finally:
        whole.end()
        if cut is not None:
            cut.end()
