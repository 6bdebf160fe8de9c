"""Runs that outlive their terminal or process: detach, kill -9 + resume, replay, divergence."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.export import step_rows
from engine.handle import FollowHandle
from engine.rundir import RunDir
from helpers import losses, train

ROOT = Path(__file__).resolve().parent.parent


def logged_losses(run: Path) -> list[float]:
    """The loss of every step as the run directory records it (re-logged steps replace)."""
    return [loss for _, _, loss, _ in step_rows(RunDir(run))]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture
def workers():
    """pids of detached workers a test starts; any still alive at the end are killed."""
    pids: list[int] = []
    yield pids
    from engine.rundir import process_alive

    for pid in pids:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_until(predicate, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_detached_run_survives_hangup_of_its_starter(tmp_path, workers):
    runs = tmp_path / "runs"
    starter = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "train", "kink", "--detach",
         "--set", "train.epochs=600", "--runs-dir", str(runs)],
        stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT,
    )  # fmt: skip
    first = starter.stdout.readline()
    assert "training in the background" in first
    for sig in (signal.SIGHUP, signal.SIGTERM):  # the terminal closes, the session is torn down
        try:
            os.killpg(starter.pid, sig)
        except ProcessLookupError:
            pass
    starter.wait(timeout=30)
    run = next(runs.iterdir())
    meta = tomllib.loads((run / "run.toml").read_text())
    worker_pid = meta["run"]["pid"]
    workers.append(worker_pid)
    assert worker_pid != starter.pid and os.getsid(worker_pid) != starter.pid  # own session

    async def follow():
        return [e async for e in FollowHandle(run, poll_s=0.05).events()]

    events = asyncio.run(asyncio.wait_for(follow(), timeout=180))
    assert events[0].type == "run_started" and events[-1].type == "finished"
    assert len(losses(events)) == 6000  # attach sees the whole curve
    assert tomllib.loads((run / "run.toml").read_text())["run"]["status"] == "finished"


def test_attach_plain_prints_history_of_a_finished_run(tmp_path, cli):
    _, _, run = train("neuron-linear", tmp_path / "runs")
    code, out, _ = cli("attach", run.name, "--plain", "--runs-dir", str(tmp_path / "runs"))
    assert code == 0 and "finished after 100 steps" in out


def test_sigterm_to_a_detached_worker_stops_it_gracefully(tmp_path, workers):
    from engine.jobs import TrainJob, start_detached
    from engine.presets import resolve_config

    config = resolve_config("kink", ["train.epochs=100000"])
    started = start_detached(TrainJob(config, str(tmp_path)))
    workers.append(started.pid)
    run = started.run_dir
    wait_until(lambda: (run / "events.jsonl").stat().st_size > 2000)
    os.kill(started.pid, signal.SIGTERM)
    wait_until(lambda: tomllib.loads((run / "run.toml").read_text())["run"]["status"] == "stopped")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] > 0


def test_control_file_pause_resume_set_lr_stop(tmp_path, workers):
    from engine.jobs import TrainJob, start_detached
    from engine.presets import resolve_config

    config = resolve_config("kink", ["train.epochs=100000"])
    started = start_detached(TrainJob(config, str(tmp_path)))
    workers.append(started.pid)
    handle = FollowHandle(started.run_dir, poll_s=0.05)
    status = lambda: tomllib.loads((handle.run_dir / "run.toml").read_text())["run"]["status"]  # noqa: E731
    handle.pause()
    wait_until(lambda: status() == "paused", 60)
    handle.set_lr(0.0002)
    handle.resume()
    wait_until(lambda: status() == "running", 30)
    handle.stop()
    wait_until(lambda: status() == "stopped", 30)
    handle.close()
    meta = tomllib.loads((handle.run_dir / "run.toml").read_text())
    assert meta["changes"][0]["new"] == 0.0002


# --- kill -9 and resume -----------------------------------------------------------------------

KILLER = textwrap.dedent(
    """
    import os, signal, sys, json
    from engine.presets import resolve_config
    from engine.build import prepare_run
    from engine.train.loop import Trainer

    preset, runs, where, sets = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    prep = prepare_run(resolve_config(preset, sets), runs)
    spe = prep.data.steps_per_epoch
    seen = {"ckpt": 0, "mid": False}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def killer(event):
        if where == "before_checkpoint" and event.type == "steps" and event.last_step >= 5:
            die()
        if where == "tick_checkpoint_at_30" and event.type == "steps" and event.last_step >= 35:
            die()  # after epoch 3's event, whose last step is last.pt's
        if event.type == "checkpoint" and event.kind == "last":
            seen["ckpt"] += 1
            if where == "after_checkpoint" and seen["ckpt"] == 3:
                die()
            if event.step % spe:
                seen["mid"] = True
        if where == "mid_epoch" and seen["mid"] and event.type == "steps" and event.last_step % spe:
            die()

    trainer = Trainer(prep, sinks=[killer])
    if where == "tick_checkpoint_at_30":  # last.pt due once: at step 30, epoch 3's last
        due = {"at": 30}

        def once(now, epoch_end=False):
            hit = trainer.step == due["at"]
            due["at"] = -1 if hit else due["at"]
            return hit

        trainer.ckpt.due = once
    if where == "during_eval":
        real = trainer.evaluate
        calls = {"n": 0}
        def evaluate():
            calls["n"] += 1
            if calls["n"] == 2:
                die()
            return real()
        trainer.evaluate = evaluate
    trainer.run()
    print("not killed")
    """
)

CASES = [
    ("kink", ["train.epochs=60", "train.log_every_s=0.002", "train.checkpoint_every_s=0.01"]),
    ("digits-cnn", ["train.epochs=3", "train.log_every_s=0.01", "train.checkpoint_every_s=0.05"]),
]


@pytest.mark.parametrize("where", ["mid_epoch", "after_checkpoint", "during_eval"])
@pytest.mark.parametrize("preset, sets", CASES, ids=["kink", "digits-cnn"])
def test_kill_and_resume_is_bitwise_identical(tmp_path, cli, preset, sets, where):
    if where == "during_eval" and preset == "kink":
        pytest.skip("kink has no evaluation")
    import json

    _, ref_events, ref_run = train(preset, tmp_path / "ref", *sets)
    killed_runs = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, preset, str(killed_runs), where, json.dumps(sets)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    run = next(killed_runs.iterdir())
    assert tomllib.loads((run / "run.toml").read_text())["run"]["status"] == "running"
    before = load_checkpoint(run / "checkpoints" / "last.pt")
    if where == "mid_epoch":
        assert before["batch"] > 0
    code, out, err = cli("resume", run.name, "--runs-dir", str(killed_runs))
    assert code == 0, err
    assert tomllib.loads((run / "run.toml").read_text())["run"]["status"] == "finished"
    assert logged_losses(run) == losses(ref_events)
    assert_same_weights(final_weights(run), final_weights(ref_run))


# --- replay ----------------------------------------------------------------------------------


def test_replay_reapplies_two_live_lr_changes(tmp_path, cli):
    from engine.api import run_sync
    from engine.control import Control
    from engine.presets import resolve_config

    control = Control()
    seen: list = []

    def change_lr(event):
        seen.append(event)
        if event.type == "epoch" and event.epoch in (5, 12):
            control.set_lr(0.0005 if event.epoch == 5 else 0.002)

    config = resolve_config("kink", ["train.epochs=20", "train.log_every_s=0.001"])
    run_sync(config, tmp_path, sinks=[change_lr], control=control)
    run = Path(seen[0].run_dir)
    changes = tomllib.loads((run / "run.toml").read_text())["changes"]
    assert [c["new"] for c in changes] == [0.0005, 0.002]

    code, out, err = cli("replay", run.name, "--runs-dir", str(tmp_path))
    assert code == 0, err
    replay = next(p for p in tmp_path.iterdir() if p != run)
    meta = tomllib.loads((replay / "run.toml").read_text())
    assert meta["run"]["replay_of"] == run.name
    assert [(c["step"], c["new"]) for c in meta["changes"]] == [
        (c["step"], c["new"]) for c in changes
    ]
    assert logged_losses(replay) == logged_losses(run)
    assert_same_weights(final_weights(replay), final_weights(run))
    _, plain, _ = train("kink", tmp_path / "plain", "train.epochs=20")
    assert losses(plain) != logged_losses(run)  # the changes did matter


# --- divergence ------------------------------------------------------------------------------


def test_exploding_lr_ends_diverged_with_finite_checkpoints(tmp_path, cli):
    preset = tmp_path / "explode.toml"
    text = (ROOT / "presets" / "neuron-linear.toml").read_text()
    preset.write_text(
        text.replace("lr = 0.1", "lr = 5.0").replace('name = "neuron-linear"', 'name = "explode"')
    )
    code, out, err = cli("train", str(preset), "--set", "train.checkpoint_every_s=0.0",
                         "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    assert code == 3, err
    run = next((tmp_path / "runs").iterdir())
    meta = tomllib.loads((run / "run.toml").read_text())
    assert meta["run"]["status"] == "diverged"
    step = meta["summary"]["diverged_step"]
    assert f"diverged at step {step}" in meta["summary"]["reason"]
    assert "loss became inf" in meta["summary"]["reason"] or "nan" in meta["summary"]["reason"]
    assert "WARNING: diverged at step" in out
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / "checkpoints" / name, weights_only=True)
        assert ckpt["step"] < step
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    code, out, err = cli("resume", run.name, "--set", "optim.lr=0.01",
                         "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    assert code == 0, err
    meta = tomllib.loads((run / "run.toml").read_text())
    assert meta["run"]["status"] == "finished" and meta["changes"][-1]["new"] == 0.01


# --- damaged run directories ------------------------------------------------------------------


def test_damaged_runs_never_crash_the_commands(tmp_path, cli):
    runs = tmp_path / "runs"
    _, _, good = train("neuron-linear", runs)
    _, _, torn_ckpt = train("neuron-linear", runs)
    ckpt = torn_ckpt / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    no_toml = runs / "20200101-000000-lost"
    no_toml.mkdir()
    (no_toml / "events.jsonl").write_text('{"type": "steps", "first_st')
    bad_toml = runs / "20200101-000001-bad"
    bad_toml.mkdir()
    (bad_toml / "run.toml").write_text("[run\n")

    code, out, err = cli("runs", "--runs-dir", str(runs))
    assert code == 0 and "damaged (no run.toml)" in out and "damaged (unreadable run.toml)" in out
    code, out, err = cli("show", torn_ckpt.name, "--runs-dir", str(runs))
    assert code == 0 and "unreadable" in out
    for command in ("show", "attach", "resume", "export"):
        extra = ["--csv"] if command == "export" else ["--plain"] if command == "attach" else []
        for ref in (no_toml.name, bad_toml.name):
            code, out, err = cli(command, ref, *extra, "--runs-dir", str(runs))
            assert code == 2 and len(err.strip().splitlines()) == 1, (command, err)
    code, out, err = cli("resume", torn_ckpt.name, "--runs-dir", str(runs))
    assert code == 2 and "unreadable checkpoint" in err
