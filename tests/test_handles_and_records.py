"""The run record (the one reader of run.toml), the follow handle and typed jobs."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import tomli_w

from engine.events import ProcessGone, RunStatus
from engine.handle import FollowHandle
from engine.jobs import ReplayJob, ResumeJob, TrainJob, job_from_dict, job_to_dict
from engine.rundir import RunDir
from helpers import train


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _pretend_killed(run_dir: Path, cut_after: str = "finished") -> None:
    """Make a finished run look like one whose process died mid-run: status running, the
    pid of a process that has exited, and its event log cut before the final event."""
    meta = tomllib.loads((run_dir / "run.toml").read_text())
    meta["run"].update(status="running", pid=_dead_pid(), host=socket.gethostname())
    (run_dir / "run.toml").write_text(tomli_w.dumps(meta))
    lines = (run_dir / "events.jsonl").read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if f'"type":"{cut_after}"' not in ln]
    (run_dir / "events.jsonl").write_text("".join(kept))


def _follow(run_dir: Path) -> list:
    async def collect() -> list:
        handle = FollowHandle(run_dir, poll_s=0.05)
        try:
            return [e async for e in handle.events()]
        finally:
            handle.close()

    return asyncio.run(asyncio.wait_for(collect(), 30))


def test_record_of_a_finished_run(runs_dir):
    _, events, run_dir = train("neuron-linear", runs_dir)
    record = RunDir(run_dir).record()
    assert record.status is RunStatus.FINISHED and not record.live and not record.damaged
    assert record.effective == record.label == "finished"
    assert record.summary["steps"] == events[-1].step
    assert record.lr == 0.1 and record.config["name"] == "neuron-linear"
    assert not record.resumable


def test_record_of_a_killed_and_a_live_run(runs_dir):
    _, _, run_dir = train("neuron-linear", runs_dir)
    _pretend_killed(run_dir)
    record = RunDir(run_dir).record()
    assert record.effective == "killed" and record.resumable and not record.live

    meta = tomllib.loads((run_dir / "run.toml").read_text())
    meta["run"]["pid"] = os.getpid()  # this very process: alive
    (run_dir / "run.toml").write_text(tomli_w.dumps(meta))
    record = RunDir(run_dir).record()
    assert record.live and record.label == f"running (alive, pid {os.getpid()})"

    meta["run"]["host"] = "another-machine"
    (run_dir / "run.toml").write_text(tomli_w.dumps(meta))
    assert RunDir(run_dir).record().label == "running (elsewhere)"


def test_record_of_damaged_folders(tmp_path):
    empty = tmp_path / "20200101-000000-lost"
    empty.mkdir()
    assert RunDir(empty).record().label == "damaged (no run.toml)"
    bad = tmp_path / "20200101-000001-bad"
    bad.mkdir()
    (bad / "run.toml").write_text("[run\n")
    record = RunDir(bad).record()
    assert record.label == "damaged (unreadable run.toml)" and record.status is None
    odd = tmp_path / "20200101-000002-odd"
    odd.mkdir()
    (odd / "run.toml").write_text('[run]\nstatus = "sleeping"\n')
    assert "unknown status" in RunDir(odd).record().problem


def test_follow_handle_plays_a_finished_run_to_its_end(runs_dir):
    _, events, run_dir = train("neuron-linear", runs_dir)
    followed = _follow(run_dir)
    assert [e.type for e in followed] == [e.type for e in events]
    assert followed[-1].type == "finished"


def test_follow_handle_says_once_that_the_process_is_gone(runs_dir):
    _, events, run_dir = train("neuron-linear", runs_dir)
    _pretend_killed(run_dir)
    followed = _follow(run_dir)
    assert isinstance(followed[-1], ProcessGone)
    assert sum(isinstance(e, ProcessGone) for e in followed) == 1
    last_steps = [e for e in followed if e.type == "steps"][-1]
    assert followed[-1].step == last_steps.last_step
    assert "torchdeck resume" in followed[-1].reason


def test_follow_handle_drain_after_wait_loaded(runs_dir):
    _, events, run_dir = train("neuron-linear", runs_dir)
    handle = FollowHandle(run_dir, poll_s=0.05)
    try:
        assert handle.wait_loaded(30)
        assert len(handle.drain()) == len(events)
    finally:
        handle.close()


def test_jobs_cross_processes_as_plain_json():
    jobs = [
        TrainJob({"name": "kink"}, "runs", "--device"),
        ResumeJob("2025", "runs", ("optim.lr=0.1",), "best", "cpu"),
        ReplayJob("2025", None, ()),
    ]
    for job in jobs:
        as_dict = job_to_dict(job)
        assert isinstance(as_dict["action"], str)
        assert job_from_dict(as_dict) == job


def test_a_worker_whose_parent_is_gone_before_the_handshake_still_trains(runs_dir):
    """The app's terminal closes while the run is being prepared: nobody reads the worker's
    reply (a broken pipe), and the run trains to its end all the same."""
    import json
    import time

    from engine.presets import resolve_config

    request = {"job": job_to_dict(TrainJob(resolve_config("neuron-linear"), str(runs_dir)))}
    read_end, write_end = os.pipe()
    os.close(read_end)  # the parent is gone: writing the reply breaks the pipe
    proc = subprocess.Popen([sys.executable, "-m", "engine.procs.worker"],
                            stdin=subprocess.PIPE, stdout=write_end, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        proc.communicate(json.dumps(request).encode(), timeout=120)
        deadline = time.monotonic() + 60
        while not list(runs_dir.glob("*/run.toml")):
            assert time.monotonic() < deadline, "no run folder"
            time.sleep(0.1)
        run_dir = next(runs_dir.glob("*/run.toml")).parent
        assert RunDir(run_dir).record().status is RunStatus.FINISHED
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
