"""Several processes, one run: torchrun starts them, DistributedDataParallel averages the
gradients (nccl on CUDA, gloo on CPU), a DistributedSampler shards every batch.

Conventions (written to run.toml):
- `train.batch_size` is the global batch; each of the N processes takes batch_size / N
  samples of it, so the loss and the learning rate mean what they mean in one process.
- The sampler shards positions of the (seed, epoch) order, so process r trains on
  order[j*B:(j+1)*B][r::N] at step j: the same global batch as a single process.
- Only rank 0 writes the run directory and emits events; logged losses are the mean over
  the processes. Collectives happen at fixed step counts (every `SYNC_STEPS` steps, in
  engine/train/strategy.py, and at epoch ends), never on a timer, so every process takes
  part in each one.
- Commands (pause, resume, stop, set-lr) reach rank 0 and are broadcast at those points.
- Dropout draws from each process's own RNG (rank 0 keeps the run's seed, rank r seeds its
  own after the model is built): a run with dropout matches a single process
  statistically, not numerically. Checkpoints hold every rank's RNG states (gathered to
  rank 0 when last.pt is written, a collective point every rank takes part in), so a run
  resumes bit for bit in the same number of processes; in another number rank 0 keeps its
  states and the others start fresh streams (said in one line).
- A collective that waits longer than TORCHDECK_DIST_TIMEOUT_S (120 s) for a peer fails
  the rank; a peer process that dies fails the others at once (its sockets close).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from engine.data import TensorData
from engine.errors import ConfigError


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    backend: str
    stop_asked: threading.Event = field(default_factory=threading.Event)  # SIGUSR1 here
    hosts: list[dict[str, Any]] = field(default_factory=list)  # each rank's host and pid

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t / self.world

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` on rank 0 (None elsewhere)."""
        out: list[Any] | None = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out


def dist_timeout() -> timedelta:
    try:
        seconds = float(os.environ.get("TORCHDECK_DIST_TIMEOUT_S", "120"))
    except ValueError:
        seconds = 120.0
    return timedelta(seconds=max(seconds, 1.0))


def init_from_env(device_name: str) -> tuple[DistContext, str]:
    """Join the process group torchrun set up; returns the context and this rank's device."""
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device_name.startswith("cuda") or (
        device_name == "auto" and torch.cuda.is_available()
    )
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    else:
        device = "cpu"
    dist.init_process_group(backend=backend, timeout=dist_timeout())
    return DistContext(rank, world, local_rank, backend), device


def per_rank_batch(batch_size: int, world: int) -> int:
    if batch_size % world:
        raise ConfigError(
            f"[train] batch_size: {batch_size} is the global batch and must divide by the "
            f"{world} processes"
        )
    return batch_size // world


class ShardedData:
    """A TensorData seen by one process: its share of every global batch."""

    def __init__(self, data: TensorData, ctx: DistContext) -> None:
        from torch.utils.data.distributed import DistributedSampler

        self.data = data
        self.ctx = ctx
        self.global_batch = data.batch_size
        self.batch_size = per_rank_batch(data.batch_size, ctx.world)
        sampler = DistributedSampler(
            range(len(data.x)), num_replicas=ctx.world, rank=ctx.rank, shuffle=False
        )
        self.positions = torch.tensor(list(sampler), device=data.x.device)
        self.x_test, self.y_test = data.x_test, data.y_test
        self.extras = data.extras
        self.x, self.y = data.x, data.y

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.positions) / self.batch_size)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.data.epoch_order(epoch)
        idx_all = self.positions if order is None else order[self.positions]
        b = self.batch_size
        for i in range(start, self.steps_per_epoch):
            idx = idx_all[i * b : (i + 1) * b]
            yield self.data.x[idx], self.data.y[idx]

    @property
    def has_test(self) -> bool:
        return self.data.has_test

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.data.eval_batches(batch_size)  # rank 0 evaluates the whole test split

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    fit_1d = False


class NullRunDir:
    """What ranks other than 0 write to: nothing."""

    def __init__(self, path: Any, run_id: str) -> None:
        from pathlib import Path

        self.path = Path(path)
        self.id = run_id
        self.meta: dict[str, Any] = {"run": {}}
        self.last_ckpt = self.path / "checkpoints" / "last.pt"
        self.best_ckpt = self.path / "checkpoints" / "best.pt"

    def append_event(self, event: Any) -> None:
        pass

    def flush_events(self) -> None:
        pass

    def close(self) -> None:
        pass

    def update(self, status: str | None = None, **sections: Any) -> None:
        pass

    def write_meta(self) -> None:
        pass
