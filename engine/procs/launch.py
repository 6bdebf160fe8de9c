"""`torchdeck train PRESET --nproc N`: start a distributed run with torchrun and wait for it.

torchrun (torch.distributed.run) starts the N processes and ends them all when one fails;
afterwards this launcher makes sure run.toml says how the run ended, naming the failed
rank's error when there is one.
"""

from __future__ import annotations

import json
import re
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


def torchrun_command(job_file: Path, nproc: int, dist_args: dict[str, Any]) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
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


def launch(
    job: dict[str, Any],
    nproc: int,
    dist_args: dict[str, Any] | None = None,
    on_started: Callable[[RunDir], None] | None = None,
) -> int:
    """Run a distributed job ({"action": "train", "config", "runs_dir"} or {"action": "resume",
    "ref", "runs_dir", "overrides", "source", "device"}) and wait for it; returns the exit
    status for the CLI. `on_started` is called once rank 0 has made the run folder."""
    with tempfile.TemporaryDirectory(prefix="torchdeck-job-") as tmp:
        job_file = Path(tmp) / "job.json"
        detached = on_started is not None  # then nobody reads the ranks' progress lines
        job_file.write_text(json.dumps({**job, "print": not detached}))
        proc = subprocess.Popen(
            torchrun_command(job_file, nproc, dist_args or {}),
            stdout=subprocess.DEVNULL if detached else None,
            stderr=subprocess.PIPE,
            text=True,
        )
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
        reasons = [p.read_text().strip() for p in sorted(Path(tmp).glob("job.json.rank*.error"))]
        if not run_file.exists():
            # rank 0 never made a run folder: a config error it reported, or a crash
            told = [ln for ln in err.splitlines() if ln.startswith("torchdeck: ")]
            if told:
                raise TorchdeckError(told[-1].removeprefix("torchdeck: "))
            raise RunDirError(f"the distributed run failed to start: {_summary(err, reasons)}")
        run = RunDir(Path(run_file.read_text()))
    return _settle(run, proc.returncode, err, reasons)


def _summary(stderr: str, reasons: list[str]) -> str:
    """The failed ranks as torchrun reports them (the ones it ended itself, with SIGTERM,
    after another rank failed, last), then what each rank wrote about its own failure."""
    causes, followers = [], []
    pattern = r"^\s*rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)"
    for rank, code in re.findall(pattern, stderr, re.M):
        if code == "-15":
            followers.append(f"rank {rank} was then stopped by torchrun")
        elif code.startswith("-"):
            causes.append(f"rank {rank} was killed (signal {code[1:]})")
        else:
            causes.append(f"rank {rank} exited with code {code}")
    parts = causes + [r.splitlines()[0][:300] for r in reasons] + followers
    if parts:
        return "; ".join(dict.fromkeys(parts))
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def _settle(run: RunDir, returncode: int, stderr: str, reasons: list[str]) -> int:
    record = run.record(check_checkpoints=False)
    if returncode == 0 and record.status is not None and not record.status.live:
        return 0 if record.status in ("finished", "stopped") else 3
    reason = _summary(stderr, reasons)
    run.mark_failed(reason)
    print(f"torchdeck: run {run.id} failed: {reason}", file=sys.stderr)
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
