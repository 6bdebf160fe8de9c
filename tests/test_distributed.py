"""Several processes through torchrun + DDP (gloo on CPU), followed like any run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch
from dist_helpers import wait_for

from engine.checkpoint import load_checkpoint
from engine.export import step_rows
from engine.presets import BUILTIN_DIR
from engine.rundir import RunDir
from helpers import losses, train

ROOT = Path(__file__).resolve().parent.parent

# digits-cnn without dropout (each process draws its own dropout masks) and with an even
# training split (1438 samples), so two processes see exactly the single process's batches.
EVEN_SETS = ["data.test_fraction=0.1997", "train.epochs=2"]


def no_dropout_preset(tmp_path: Path) -> Path:
    text = (BUILTIN_DIR / "digits-cnn.toml").read_text()
    path = tmp_path / "digits-cnn-nodrop.toml"
    path.write_text(text.replace('{ type = "Dropout", p = 0.25 },', ""))
    return path


def torchdeck(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """Tolerance: DDP averages two half-batch mean gradients where one process takes the
    mean over the whole batch; the sums run in another order, so the weights differ in the
    last float32 bits, and 90 Adam steps grow that to about 1e-6. We allow 1e-5 absolute +
    1e-4 relative, orders of magnitude below what a wrong batch or lr convention would give."""
    preset = no_dropout_preset(tmp_path)
    sets = [x for s in EVEN_SETS for x in ("--set", s)]
    proc = torchdeck(
        "train", str(preset), "--nproc", "2", *sets, "--runs-dir", str(tmp_path / "dist")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "dist").iterdir())
    assert len(runs) == 1  # one run directory, written by rank 0 only
    run = runs[0]
    meta = tomllib.loads((run / "run.toml").read_text())
    assert meta["run"]["world_size"] == 2 and meta["run"]["backend"] == "gloo"
    assert (
        meta["run"]["per_process_batch"] == 16 and "global batch" in meta["run"]["batch_convention"]
    )
    assert meta["run"]["status"] == "finished"

    _, single_events, single = train(str(preset), tmp_path / "single", *EVEN_SETS)
    dist_w = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    one_w = load_checkpoint(single / "checkpoints" / "last.pt")["model"]
    assert list(dist_w) == list(one_w)  # the unwrapped model: no "module." prefix
    worst = max((dist_w[k] - one_w[k]).abs().max().item() for k in one_w)
    for k in one_w:
        assert torch.allclose(dist_w[k], one_w[k], rtol=1e-4, atol=1e-5), (k, worst)
    dist_losses = [loss for _, _, loss, _ in step_rows(RunDir(run))]
    assert len(dist_losses) == len(losses(single_events)) == 90
    assert dist_losses == pytest.approx(losses(single_events), rel=1e-4, abs=1e-5)


def _rank_pids(marker: str) -> dict[int, int]:
    """pid of each dist_worker process whose command line holds `marker`, by RANK."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "engine.procs.dist_worker" not in cmdline or marker not in cmdline:
                continue
            env = dict(
                kv.split("=", 1)
                for kv in (entry / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in kv
            )
            found[int(env["RANK"])] = int(entry.name)
        except (OSError, KeyError, ValueError):
            continue
    return found


def test_killing_one_rank_fails_the_run_and_ends_the_other(tmp_path):
    runs = tmp_path / "runs"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "train", "digits-cnn", "--nproc", "2",
         "--set", "train.epochs=500", "--runs-dir", str(runs)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    pids: dict[int, int] = {}
    while time.monotonic() < deadline:
        pids = _rank_pids("torchdeck-job-")
        steps_logged = runs.exists() and any(
            (r / "events.jsonl").exists() and (r / "events.jsonl").stat().st_size > 2000
            for r in runs.iterdir()
        )
        if len(pids) == 2 and steps_logged:
            break
        time.sleep(0.2)
    assert len(pids) == 2, pids
    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.monotonic()
    out, err = launcher.communicate(timeout=120)
    took = time.monotonic() - killed_at
    assert launcher.returncode == 1, err[-2000:]
    assert took < 60  # bounded: torchrun notices within its monitor interval
    run = next(runs.iterdir())
    meta = tomllib.loads((run / "run.toml").read_text())
    assert meta["run"]["status"] == "failed"
    assert meta["summary"]["reason"].startswith("rank 1 was killed (signal 9)"), meta["summary"]
    # torchrun's own output is kept beside the record, and the message says where
    assert f"torchrun's output: {run / 'torchrun.log'}" in err, err[-2000:]
    assert "exitcode" in (run / "torchrun.log").read_text()
    wait_for(lambda: not _alive(pids[0]), 10, "rank 0 to end")  # no rank left hanging


def _alive(pid: int) -> bool:
    from engine.rundir import process_alive

    return process_alive(pid)


def test_distributed_checkpoint_resumes_in_one_process(tmp_path):
    preset = no_dropout_preset(tmp_path)
    sets = [x for s in EVEN_SETS for x in ("--set", s)]
    proc = torchdeck("train", str(preset), "--nproc", "2", *sets, "--set",
                     "train.epochs=1", "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next((tmp_path / "runs").iterdir())
    proc = torchdeck(
        "resume", run.name, "--set", "train.epochs=2", "--runs-dir", str(tmp_path / "runs")
    )
    assert proc.returncode == 0, proc.stderr
    meta = tomllib.loads((run / "run.toml").read_text())
    assert meta["run"]["status"] == "finished" and meta["summary"]["steps"] == 90
    # the resumed second epoch is what one process does after the distributed first epoch
    _, ref_events, _ = train(str(preset), tmp_path / "ref", *EVEN_SETS)
    resumed = [loss for _, _, loss, _ in step_rows(RunDir(run))]
    assert resumed == pytest.approx(losses(ref_events), rel=1e-4, abs=1e-5)


def test_batch_must_divide_by_processes(tmp_path):
    proc = torchdeck("train", "digits-cnn", "--nproc", "3", "--runs-dir", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "torchdeck: [train] batch_size: 32 is the global batch and must divide by the 3 processes"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_nccl(tmp_path):
    proc = torchdeck("train", "digits-cnn", "--nproc", "2", "--device", "cuda",
                     "--set", "train.epochs=2", "--runs-dir", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = tomllib.loads((next(tmp_path.iterdir()) / "run.toml").read_text())
    assert meta["run"]["backend"] == "nccl"


def test_one_process_run_resumes_in_two(tmp_path):
    """The other way round: a single-process run's checkpoint continues under torchrun."""
    preset = no_dropout_preset(tmp_path)
    runs = tmp_path / "runs"
    _, _, run = train(str(preset), runs, *EVEN_SETS[:1], "train.epochs=1")
    proc = torchdeck("resume", run.name, "--nproc", "2", "--set", "train.epochs=2",
                     "--runs-dir", str(runs))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = tomllib.loads((run / "run.toml").read_text())
    assert meta["run"]["status"] == "finished" and meta["summary"]["steps"] == 90
    assert meta["run"]["world_size"] == 2
    _, ref_events, ref = train(str(preset), tmp_path / "ref", *EVEN_SETS)
    resumed = [loss for _, _, loss, _ in step_rows(RunDir(run))]
    assert resumed == pytest.approx(losses(ref_events), rel=1e-4, abs=1e-5)
    got = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    want = load_checkpoint(ref / "checkpoints" / "last.pt")["model"]
    for k in want:
        assert torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-5), k


def test_detached_distributed_run_is_followed_like_any_run(tmp_path):
    import asyncio

    from engine.handle import FollowHandle

    proc = torchdeck("train", "digits-cnn", "--nproc", "2", "--detach", "--set", "train.epochs=2",
                     "--runs-dir", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "training in the background" in proc.stdout
    launcher_pid = int(proc.stdout.split("(pid ")[1].split(")")[0])
    try:
        run = next(tmp_path.iterdir())

        async def follow():
            return [e async for e in FollowHandle(run, poll_s=0.05).events()]

        events = asyncio.run(asyncio.wait_for(follow(), timeout=240))
        assert events[-1].type == "finished" and len(losses(events)) == 90
        meta = tomllib.loads((run / "run.toml").read_text())
        assert meta["run"]["world_size"] == 2 and meta["run"]["status"] == "finished"
    finally:
        try:
            os.killpg(launcher_pid, signal.SIGKILL)  # the agent and the ranks die with it
        except ProcessLookupError:
            pass


def test_the_network_interface_is_picked_from_the_master_address(tmp_path, monkeypatch):
    from engine.procs.launch import agent_env
    from engine.procs.lifeline import interface_for

    assert interface_for("127.0.0.1") == "lo"
    assert interface_for("no-such-host.invalid") is None
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.delenv("NCCL_SOCKET_IFNAME", raising=False)
    env = agent_env(tmp_path, {"nnodes": 2, "master_addr": "127.0.0.1"})
    assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == "lo"
    assert env["TMPDIR"] == env["TORCHDECK_JOB_DIR"] == str(tmp_path)  # torchelastic's too
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth7")  # one the user gave is kept
    assert (
        agent_env(tmp_path, {"nnodes": 2, "master_addr": "127.0.0.1"})["GLOO_SOCKET_IFNAME"]
        == "eth7"
    )
    assert "NCCL_SOCKET_IFNAME" not in agent_env(tmp_path, {"nnodes": 1})  # one node: as it was


def test_a_lost_peer_is_said_so():
    from engine.procs.dist_worker import peer_lost

    gloo = "RuntimeError: [/x/pair.cc:545] Read error [10.0.0.2]:41234: Connection reset by peer."
    assert peer_lost(gloo) == (
        "lost a peer (connection reset by peer at 10.0.0.2:41234): another rank died or its "
        "node is gone"
    )
    assert peer_lost("RuntimeError: [x.cc:81] Timed out waiting 120000ms for recv operation")
    assert peer_lost("ValueError: bad") == "ValueError: bad"


def test_a_killed_rank_is_named_first_whatever_order_torchrun_saw_the_failures_in():
    from engine.procs.launch import _summary

    stderr = (
        "  [0]:\n    time : x\n    rank : 0 (local_rank: 0)\n    exitcode : 1 (pid: 11)\n"
        "  [1]:\n    time : x\n    rank : 1 (local_rank: 1)\n    exitcode : -9 (pid: 12)\n"
    )
    reason = _summary(stderr, ["rank 0: lost a peer (connection reset by peer)"])
    assert reason.startswith("rank 1 was killed (signal 9); rank 0 exited with code 1; "), reason


def test_a_rank_dying_after_the_end_leaves_a_finished_run_finished(tmp_path, capsys):
    """Rank 0 wrote the end; a rank then died on its way out (an abort in a native library's
    teardown): the run stays finished, and the output says what happened."""
    from engine.procs.launch import _settle

    _, _, run_dir = train("kink", tmp_path / "runs", "train.epochs=2")
    stderr = "terminate called without an active exception\n" \
        "  [0]:\n    time : x\n    rank : 1 (local_rank: 1)\n    exitcode : -6 (pid: 12)\n"
    assert _settle(RunDir(run_dir), 1, stderr, []) == 0
    assert tomllib.loads((run_dir / "run.toml").read_text())["run"]["status"] == "finished"
    err = capsys.readouterr().err
    assert "finished, but then rank 1 was killed (signal 6)" in err, err
    assert "terminate called" in (run_dir / "torchrun.log").read_text()
