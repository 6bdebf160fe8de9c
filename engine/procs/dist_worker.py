"""One process of a distributed run, as started by torchrun:

    python -m torch.distributed.run --nproc-per-node N -m engine.procs.dist_worker JOB.json

Rank 0 prepares the run directory and broadcasts where it is (or why it could not);
every rank builds the same seeded model, wraps it in DistributedDataParallel and trains
its share of each global batch (engine/procs/distributed.py has the conventions). A rank that
fails writes its reason beside the job file and exits non-zero, so torchrun ends the
others; the launcher (engine/procs/launch.py) then marks the run failed.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from engine.errors import TorchdeckError


def main(job_path: str) -> int:
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
    error_file = Path(f"{job_path}.rank{ctx.rank}.error")
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
            if ctx.is_main:
                print(f"torchdeck: {reply['error']}", file=sys.stderr)
            return 2
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
        else:
            trainer = Trainer(prep, sinks=sinks, dist=ctx)
        if ctx.is_main:
            watch_control_file(prep.run.path, trainer.control, threading.Event())
        result = trainer.run()
        if result.type == "failed":
            error_file.write_text(f"rank {ctx.rank}: {result.reason}")
            return 1
        return 0
    except Exception as err:  # report this rank's failure; torchrun ends the other ranks
        error_file.write_text(f"rank {ctx.rank}: {type(err).__name__}: {err}")
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
