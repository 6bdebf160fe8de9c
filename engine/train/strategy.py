"""How the loop runs: in one process, or as one of several (DDP under torchrun). The loop
asks its strategy instead of branching on it (Lightning Fabric's idea):

    model           what the loop calls (the DDP wrapper; prep.model stays unwrapped)
    is_main         whether this process writes the run folder, evaluates, emits
    reduce          what combines stacked losses before the fetch (the mean over ranks)
    sync_every      steps between collective points (0: none)
    tick_every(s)   the timer of the loop's ticks (a distributed run ticks at sync points,
                    never on a timer, so every rank takes part in each collective)
    polled(control) the Control the loop polls every step
    commands(c)     the commands to apply now (rank 0's, broadcast to every rank)
    wait_command(c) one command while paused (every rank waits in the broadcast)
    flush_at_epoch_end   whether each epoch end is a collective point for the losses
"""

from __future__ import annotations

import math
from typing import Any

from engine.control import Control

SYNC_STEPS = 20  # steps between the collective points of a distributed run
KEEPALIVE_S = 5.0  # while paused, rank 0 broadcasts at least this often (no collective timeout)


class OneProcess:
    """Training in this process alone: commands come straight from the Control."""

    is_main = True
    reduce = None
    sync_every = 0
    flush_at_epoch_end = False

    def __init__(self, prep: Any) -> None:
        self.model = prep.model

    def tick_every(self, log_every_s: float) -> float:
        return log_every_s

    def polled(self, control: Control) -> Control:
        return control

    def commands(self, control: Control) -> list[tuple[str, Any]]:
        return control.drain()

    def wait_command(self, control: Control) -> tuple[str, Any]:
        while (item := control.wait(timeout=0.5)) is None:
            pass
        return item


class DDP:
    """One rank of a distributed run (engine/procs/distributed.py has the conventions):
    losses are the mean over the ranks, commands reach rank 0 and are broadcast at the
    collective points, which come at fixed step counts."""

    sync_every = SYNC_STEPS
    flush_at_epoch_end = True  # every rank at the same step: a safe collective point

    def __init__(self, prep: Any, ctx: Any) -> None:
        self.ctx = ctx
        self.is_main = ctx.is_main
        self.model = prep.train_model
        self.reduce = ctx.mean
        self._never = Control()  # nothing arrives here: commands come through `commands`

    @staticmethod
    def prepare(prep: Any, ctx: Any) -> None:
        """Give `prep` this rank's share of the data and the DDP-wrapped model."""
        from torch.nn.parallel import DistributedDataParallel

        from engine.errors import ConfigError
        from engine.procs.distributed import ShardedData

        if getattr(prep.data, "path", "resident") == "streaming":
            raise ConfigError(
                "--nproc: this data streams through a DataLoader, which is not sharded across "
                "processes yet; train it in one process, or set data.resident = true"
            )
        prep.data = ShardedData(prep.data, ctx)
        device_ids = [ctx.local_rank] if ctx.backend == "nccl" else None
        prep.train_model = DistributedDataParallel(prep.model, device_ids=device_ids)

    def tick_every(self, log_every_s: float) -> float:
        return math.inf

    def polled(self, control: Control) -> Control:
        return self._never

    def commands(self, control: Control) -> list[tuple[str, Any]]:
        return self.ctx.broadcast(control.drain() if self.is_main else None)

    def wait_command(self, control: Control) -> tuple[str, Any]:
        item = None
        if self.is_main:
            item = control.wait(timeout=KEEPALIVE_S) or ("keepalive", None)
        return self.ctx.broadcast(item)


def strategy_for(prep: Any, dist: Any = None) -> OneProcess | DDP:
    """`dist`: an engine.procs.distributed.DistContext when this is one of several processes
    (prep already prepared by `DDP.prepare`)."""
    return OneProcess(prep) if dist is None else DDP(prep, dist)
