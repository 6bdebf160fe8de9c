"""`torchdeck train PRESET --nproc N`: start a distributed run with torchrun and wait for it.

The launcher starts torchrun's agent (engine/procs/agent.py) in a session of its own, with
a job folder of its own (`torchdeck-job-*`, also torchelastic's TMPDIR), and:

- Ctrl-C or SIGTERM ask the ranks on this node to stop (SIGUSR1; each rank writes
  its pid beside the job file): the request travels to rank 0 with the losses at the next
  collective point, every rank stops there, a checkpoint is written and the run ends
  `stopped`. A second signal ends the agent and its ranks at once.
- The agent dies with the launcher (and the ranks with the agent): killing the launcher,
  even with SIGKILL, leaves no process behind, and the agent then removes the job folder.
- Afterwards this launcher makes sure run.toml says how the run ended, naming the failed
  rank's error when there is one. Nodes other than 0 report their own exit only: rank 0's
  node owns the run folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import RunDirError, TorchdeckError
from engine.rundir import RunDir

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TORCHRUN_LOG = "torchrun.log"  # a failed run's torchrun output (node N > 0: torchrun.nodeN.log)


def torchrun_command(job_file: Path, nproc: int, dist_args: dict[str, Any]) -> list[str]:
    cmd = [sys.executable, "-m", "engine.procs.agent", f"--nproc-per-node={nproc}"]
    if dist_args.get("nnodes", 1) > 1:
        cmd += [
            f"--nnodes={dist_args['nnodes']}",
            f"--node-rank={dist_args.get('node_rank', 0)}",
            f"--master-addr={dist_args.get('master_addr') or '127.0.0.1'}",
            f"--master-port={dist_args.get('master_port') or 29500}",
        ]
    else:
        cmd += ["--standalone"]
    cmd += ["--monitor-interval=0.5", "-m", "engine.procs.dist_worker", str(job_file)]
    return cmd


def agent_env(job_dir: Path, dist_args: dict[str, Any]) -> dict[str, str]:
    """The agent's environment: its temp folders in the job folder, the launcher's pid (it
    dies with it), and the network interface toward the master where none is set."""
    env = {
        **os.environ,
        "TMPDIR": str(job_dir),
        "TORCHDECK_JOB_DIR": str(job_dir),
        "TORCHDECK_LAUNCHER_PID": str(os.getpid()),
    }
    if dist_args.get("nnodes", 1) > 1:
        from engine.procs.lifeline import interface_for

        name = interface_for(dist_args.get("master_addr") or "127.0.0.1")
        for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            if not env.get(var):  # not given (an empty value is not one)
                env.pop(var, None)
                if name:
                    env[var] = name
    return env


class _Signals:
    """The launcher's SIGINT and SIGTERM: the first asks the ranks to stop at their next
    collective point, the second (or one before any rank is up) ends the agent."""

    def __init__(self, job_dir: Path, agent: subprocess.Popen, quiet: bool) -> None:
        self.job_dir, self.agent, self.quiet = job_dir, agent, quiet
        self.count = 0
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def rank_pids(self) -> list[int]:
        pids = []
        for path in self.job_dir.glob("job.json.pid*"):
            try:
                pids.append(int(path.read_text()))
            except (OSError, ValueError):
                continue
        return pids

    def handle(self, signum: int, _frame: Any) -> None:
        self.count += 1
        pids = self.rank_pids() if self.count == 1 else []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        if pids:
            if not self.quiet:
                try:
                    print(
                        f"torchdeck: stopping at the next sync point with a checkpoint "
                        f"({signal.Signals(signum).name} again to end it now)",
                        file=sys.stderr,
                        flush=True,
                    )
                except OSError:  # no terminal any more: the stop goes on
                    pass
            return
        try:
            os.killpg(self.agent.pid, signal.SIGTERM)  # the agent: torchrun ends its ranks
        except (ProcessLookupError, PermissionError):
            pass


def launch(
    job: dict[str, Any],
    nproc: int,
    dist_args: dict[str, Any] | None = None,
    on_started: Callable[[RunDir], None] | None = None,
) -> int:
    """Run a distributed job ({"action": "train", "config", "runs_dir"} or {"action": "resume",
    "ref", "runs_dir", "overrides", "source", "device"}) and wait for it; returns the exit
    status for the CLI. `on_started` is called once rank 0 has made the run folder."""
    dist_args = dist_args or {}
    node_rank = int(dist_args.get("node_rank") or 0)
    tmp = Path(tempfile.mkdtemp(prefix="torchdeck-job-"))
    signals: _Signals | None = None
    try:
        job_file = tmp / "job.json"
        detached = on_started is not None  # then nobody reads the ranks' progress lines
        job_file.write_text(json.dumps({**job, "print": not detached}))
        proc = subprocess.Popen(
            torchrun_command(job_file, nproc, dist_args),
            stdout=subprocess.DEVNULL if detached else None,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=agent_env(tmp, dist_args),
            start_new_session=True,  # Ctrl-C in the terminal reaches the launcher only
        )
        signals = _Signals(tmp, proc, quiet=detached)
        signals.install()
        stderr: list[str] = []
        reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
        reader.start()
        run_file = Path(f"{job_file}.run")
        while on_started is not None and proc.poll() is None and not run_file.exists():
            time.sleep(0.1)
        if on_started is not None and run_file.exists():
            on_started(RunDir(Path(run_file.read_text())))
        proc.wait()
        reader.join()
        err = "".join(stderr)
        reasons = [p.read_text().strip() for p in sorted(tmp.glob("job.json.rank*.error"))]
        if not run_file.exists():
            # the ranks never learnt of a run folder: a config error rank 0 reported, or a crash
            told = [ln for ln in err.splitlines() if ln.startswith("torchdeck: ")]
            if told:
                raise TorchdeckError(told[-1].removeprefix("torchdeck: "))
            if signals.count:
                raise RunDirError("the distributed run was interrupted before it started")
            raise RunDirError(f"the distributed run failed to start: {_summary(err, reasons)}")
        run = RunDir(Path(run_file.read_text()))
        if node_rank:
            return _settle_other_node(run, node_rank, proc.returncode, err, reasons)
        return _settle(run, proc.returncode, err, reasons)
    finally:
        if signals is not None:
            signals.restore()
        shutil.rmtree(tmp, ignore_errors=True)


def _summary(stderr: str, reasons: list[str]) -> str:
    """The failed ranks as torchrun reports them (the ones it ended itself, with SIGTERM,
    after another rank failed, last), then what each rank wrote about its own failure."""
    killed, exited, followers = [], [], []
    pattern = r"^\s*rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)"
    for rank, code in re.findall(pattern, stderr, re.M):
        if code == "-15":
            followers.append(f"rank {rank} was then stopped by torchrun")
        elif code.startswith("-"):
            killed.append(f"rank {rank} was killed (signal {code[1:]})")
        else:
            exited.append(f"rank {rank} exited with code {code}")
    # a killed rank is the cause; a rank that exited because it lost that peer may have been
    # seen first, so the killed ones come first whatever order torchrun noticed them in
    parts = killed + exited + [r.splitlines()[0][:300] for r in reasons] + followers
    if parts:
        return "; ".join(dict.fromkeys(parts))
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def _settle(run: RunDir, returncode: int, stderr: str, reasons: list[str]) -> int:
    record = run.record(check_checkpoints=False)
    if record.status in ("finished", "stopped") and not record.status.live and returncode:
        # rank 0 wrote the end (last.pt, the summary, the status) before a rank died on its
        # way out: the run is whole, and stays as it ended
        print(f"torchdeck: run {run.id} {record.status}, but then {_summary(stderr, reasons)}"
              f"{_kept(run, stderr)}", file=sys.stderr)  # fmt: skip
        return 0
    if returncode == 0 and record.status is not None and not record.status.live:
        return 0 if record.status in ("finished", "stopped") else 3
    reason = _summary(stderr, reasons)
    run.mark_failed(reason)
    print(f"torchdeck: run {run.id} failed: {reason}{_kept(run, stderr)}", file=sys.stderr)
    return 1


def _kept(run: RunDir, stderr: str, node_rank: int = 0) -> str:
    """Keep torchrun's output (every rank's stderr: a native crash's own words are there)
    in the run folder after a failure; a note naming it, or "" where it cannot be kept."""
    if not stderr.strip():
        return ""
    name = TORCHRUN_LOG.replace(".", f".node{node_rank}.") if node_rank else TORCHRUN_LOG
    path = run.path / name
    try:
        path.write_text(stderr)
    except OSError:
        return ""
    return f" (torchrun's output: {path})"


def _settle_other_node(
    run: RunDir, node_rank: int, returncode: int, stderr: str, reasons: list[str]
) -> int:
    """A node other than 0: its ranks' exit is its answer (node 0 owns run.toml, which
    may be on another machine, or not final yet when this node's ranks are done)."""
    if returncode == 0:
        return 0
    print(
        f"torchdeck: run {run.id} failed on node {node_rank}: {_summary(stderr, reasons)}"
        f"{_kept(run, stderr, node_rank) if run.path.is_dir() else ''}",
        file=sys.stderr,
    )
    return 1


def detached_main() -> int:
    """`python -m engine.procs.launch`, started by `train --nproc N --detach` in a new session: the
    same handshake as engine.procs.worker (one JSON line once the run folder exists), then stdout
    and stderr go to the run's worker.log while torchrun runs."""
    from engine.procs.worker import handshake

    request = json.loads(sys.stdin.read())

    def started(run: RunDir) -> None:
        handshake({"ok": True, "run_dir": str(run.path), "run_id": run.id}, run.path)

    try:
        return launch(request["job"], request["nproc"], request["dist_args"], on_started=started)
    except TorchdeckError as err:
        handshake({"ok": False, "error": str(err)})
        return 2


if __name__ == "__main__":
    raise SystemExit(detached_main())
