"""One process of a distributed run, as started by torchrun:

    python -m torch.distributed.run --nproc-per-node N -m engine.procs.dist_worker JOB.json

Rank 0 prepares the run directory and broadcasts where it is (or why it could not);
every rank builds the same seeded model, wraps it in DistributedDataParallel and trains
its share of each global batch (engine/procs/distributed.py has the conventions). A rank that
fails writes its reason beside the job file and exits non-zero, so torchrun ends the
others; the launcher (engine/procs/launch.py) then marks the run failed.

Each rank dies with its agent (SIGKILL when the agent exits), ignores SIGINT (the launcher
decides what Ctrl-C means) and takes SIGUSR1 as "stop": the request reaches rank 0 with
the losses at the next collective point, and every rank stops there with a checkpoint.
It writes its pid beside the job file, for the launcher to signal.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from engine.errors import TorchdeckError


def _lifeline(job_path: str) -> threading.Event:
    """Die with the agent; SIGINT ignored; SIGUSR1 sets the returned event (stop asked)."""
    from engine.procs.lifeline import die_with_parent, env_pid

    die_with_parent(signal.SIGKILL, env_pid("TORCHDECK_AGENT_PID"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_asked = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: stop_asked.set())
    local_rank = os.environ.get("LOCAL_RANK", "0")
    Path(f"{job_path}.pid{local_rank}").write_text(str(os.getpid()))
    return stop_asked


def main(job_path: str) -> int:
    stop_asked = _lifeline(job_path)
    import torch.distributed as dist

    from engine.build import PreparedRun, build_parts, prepare_run
    from engine.console import ConsolePrinter
    from engine.jobs import ResumeJob, TrainJob, job_from_dict
    from engine.procs.distributed import NullRunDir, init_from_env, per_rank_batch
    from engine.procs.worker import watch_control_file
    from engine.resume import prepare_resume, resumed_trainer
    from engine.train.loop import Trainer
    from engine.train.strategy import DDP

    request = json.loads(Path(job_path).read_text())  # a job, and "print" from the launcher
    job = job_from_dict(request)
    resume = isinstance(job, ResumeJob)
    config = job.config if isinstance(job, TrainJob) else {}
    ctx, device = init_from_env((job.device or "auto") if resume else config["train"]["device"])
    ctx.stop_asked = stop_asked
    error_file = Path(f"{job_path}.rank{ctx.rank}.error")
    clean = False
    try:
        reply: dict = {}
        prep = None
        if ctx.is_main:
            try:
                if resume:
                    overrides = [*job.overrides, f"train.device={device}"]
                    prep, ckpt, new_lr = prepare_resume(
                        job.ref, job.runs_dir, overrides, job.source
                    )
                    reply = {"ckpt": ckpt, "new_lr": new_lr}
                else:
                    config["train"]["device"] = device
                    per_rank_batch(config["train"]["batch_size"], ctx.world)
                    prep = prepare_run(config, job.runs_dir)
                reply.update(run_dir=str(prep.run.path), run_id=prep.run.id, config=prep.config)
                Path(f"{job_path}.run").write_text(reply["run_dir"])
            except TorchdeckError as err:
                reply = {"error": str(err)}
        reply = ctx.broadcast(reply)  # the checkpoint too, so no rank needs the run folder
        if "error" in reply:
            if ctx.local_rank == 0:  # each node's launcher tells its user
                print(f"torchdeck: {reply['error']}", file=sys.stderr)
            return 2
        if not ctx.is_main and ctx.local_rank == 0:  # the run this node's launcher reports
            Path(f"{job_path}.run").write_text(reply["run_dir"])
        ctx.hosts = ctx.all_gather({"host": _host(), "pid": os.getpid()})  # once, at the start
        if prep is None:
            config = reply["config"]
            config["train"]["device"] = device
            parts = build_parts(config)
            prep = PreparedRun(config, *parts, run=NullRunDir(reply["run_dir"], reply["run_id"]))
        DDP.prepare(prep, ctx)  # this rank's share of the data, the DDP-wrapped model
        sinks = []
        if ctx.is_main:
            prep.run.meta["run"].update(
                world_size=ctx.world,
                backend=ctx.backend,
                per_process_batch=prep.data.batch_size,
                batch_convention=(
                    f"train.batch_size ({prep.data.global_batch}) is the global batch: each of "
                    f"{ctx.world} processes takes {prep.data.batch_size}; DDP averages the "
                    "gradients, so the learning rate applies as in one process"
                ),
            )
            prep.run.write_meta()
            if request.get("print", True):
                sinks.append(ConsolePrinter())
        if resume:
            trainer = resumed_trainer(prep, reply["ckpt"], reply["new_lr"], sinks, dist=ctx)
            if ctx.is_main and trainer.notice:
                print(f"torchdeck: {trainer.notice}", file=sys.stderr, flush=True)
        else:
            trainer = Trainer(prep, sinks=sinks, dist=ctx)
        if ctx.is_main:
            watch_control_file(prep.run.path, trainer.control, threading.Event())
        result = trainer.run()
        if result.type == "failed":
            error_file.write_text(f"rank {ctx.rank}: {peer_lost(result.reason)}")
            return 1
        clean = True
        return 0
    except Exception as err:  # report this rank's failure; torchrun ends the other ranks
        error_file.write_text(f"rank {ctx.rank}: {peer_lost(f'{type(err).__name__}: {err}')}")
        return 1
    finally:
        # after a failure the group may be broken (a peer gone): tearing it down can wait
        # for seconds, and the process's exit frees it anyway
        if clean and dist.is_initialized():
            dist.destroy_process_group()


def peer_lost(reason: str) -> str:
    """A collective's error that means another rank is gone, said so (with the address)."""
    import re

    if re.search(r"Timed out waiting \d+ms for (?:recv|send)", reason):
        return (
            "a peer did not answer within TORCHDECK_DIST_TIMEOUT_S: another rank hangs or "
            "its node is unreachable"
        )
    lost = re.search(r"Connection (?:reset|closed) by peer|Broken pipe", reason)
    if lost is None:
        return reason
    where = re.search(r"\[([0-9A-Za-z.:%-]+)\]:(\d+)", reason)
    at = f" at {where.group(1)}:{where.group(2)}" if where else ""
    return f"lost a peer ({lost.group(0).lower()}{at}): another rank died or its node is gone"


def _host() -> str:
    import socket

    return socket.gethostname()


def _exit(code: int) -> None:
    """Exit at once, without the interpreter's teardown: after a failure a broken process
    group's teardown can take seconds (and the other nodes wait for this one); after a
    clean end (the process group destroyed, the run's files written and closed), the
    native libraries' static destructors have been seen to abort a finished rank now and
    then ("terminate called without an active exception", SIGABRT), which would fail a
    finished run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main(sys.argv[1]))
