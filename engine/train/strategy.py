"""How the loop runs: in one process, or as one of several (DDP under torchrun). The loop
asks its strategy instead of branching on it (Lightning Fabric's idea):

    model           what the loop calls (the DDP wrapper; prep.model stays unwrapped)
    is_main         whether this process writes the run folder, evaluates, emits
    reduce          what combines stacked losses before the fetch (the mean over ranks)
    sync_every      steps between collective points (0: none)
    tick_every(s)   the timer of the loop's ticks (a distributed run ticks at sync points,
                    never on a timer, so every rank takes part in each collective)
    polled(control) the Control the loop polls every step
    commands(c, checkpoint)  the commands to apply now (rank 0's, broadcast to every rank;
                    `checkpoint`: rank 0 finds last.pt due, which every rank then writes)
    wait_command(c) one command while paused (every rank waits in the broadcast)
    flush_at_epoch_end   whether each epoch end is a collective point for the losses
    timed_checkpoints    whether the loop writes last.pt on its own timer (one process);
                    a distributed run writes it where every rank agrees: a command at a
                    sync point, an epoch end (checkpoint_every_s = 0), a pause, the end
    rank_states(data)    every rank's RNG and data states, gathered to rank 0 as last.pt is
                    written (a collective); None in one process
    restored(ckpt)  this rank's own states from a checkpoint; a line for the user, or None
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch

from engine.control import Control

SYNC_STEPS = 20  # steps between the collective points of a distributed run
KEEPALIVE_S = 5.0  # while paused, rank 0 broadcasts at least this often (no collective timeout)
ROW = 6  # figures each rank sends with its losses: the rank view's FIELDS, then "stop asked"


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank `rank`'s own random stream (dropout): rank 0 keeps the run's seed."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63)


def world_notice(ckpt: dict[str, Any], world: int) -> str | None:
    """One line where a checkpoint written by N processes continues in another number."""
    ranks = ckpt.get("rng", {}).get("ranks")
    written = len(ranks) if ranks else 1
    if written == world:
        return None
    return (
        f"the checkpoint was written by {written} process{'es' if written > 1 else ''} and "
        f"continues in {world}: "
        "the same global batches; rank 0's random streams go on, other ranks' start afresh "
        "(dropout draws differ from an uninterrupted run)"
    )


class OneProcess:
    """Training in this process alone: commands come straight from the Control."""

    is_main = True
    reduce = None
    sync_every = 0
    flush_at_epoch_end = False
    timed_checkpoints = True

    def __init__(self, prep: Any) -> None:
        self.model = prep.model

    def tick_every(self, log_every_s: float) -> float:
        return log_every_s

    def polled(self, control: Control) -> Control:
        return control

    def commands(self, control: Control, checkpoint: bool = False) -> list[tuple[str, Any]]:
        return control.drain()

    def wait_command(self, control: Control) -> tuple[str, Any]:
        while (item := control.wait(timeout=0.5)) is None:
            pass
        return item

    def rank_states(self, data: Any) -> None:
        return None

    def restored(self, ckpt: dict[str, Any]) -> str | None:
        return world_notice(ckpt, 1)


class DDP:
    """One rank of a distributed run (engine/procs/distributed.py has the conventions):
    losses are the mean over the ranks, commands reach rank 0 and are broadcast at the
    collective points, which come at fixed step counts."""

    sync_every = SYNC_STEPS
    flush_at_epoch_end = True  # every rank at the same step: a safe collective point
    timed_checkpoints = False

    def __init__(self, prep: Any, ctx: Any) -> None:
        self.ctx = ctx
        self._prep = prep
        self.is_main = ctx.is_main
        self.model = prep.train_model
        self._never = Control()  # nothing arrives here: commands come through `commands`
        self._stop_asked = False  # on rank 0: some rank asked to stop (SIGUSR1)
        mode = os.environ.get("TORCHDECK_RANK_VIEW", "1")  # the bench's: 0 (off) or blocks
        self.meter = RankMeter(prep, ctx) if mode != "0" else None
        self.blocks = None
        if mode == "blocks":
            from engine.train.view_blocks import ViewBlocks

            self.blocks = ViewBlocks.from_env(self.meter, ctx.is_main)
        self._row = ROW if self.meter else 1  # without the view, only the stop request rides
        self.reduce = self._reduce

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
        if ctx.rank:  # the same weights everywhere, then a random stream of its own per rank
            torch.manual_seed(rank_seed(prep.config["train"]["seed"], ctx.rank))

    def tick_every(self, log_every_s: float) -> float:
        return math.inf

    def polled(self, control: Control) -> Control:
        return self._never

    def _reduce(self, stacked: torch.Tensor) -> torch.Tensor:
        """The mean of the stacked losses over the ranks, with each rank's figures for the
        rank view and its stop request riding along in the same all-reduce."""
        import torch.distributed as dist

        ctx, n, k = self.ctx, stacked.numel(), self._row
        work = stacked if stacked.dtype in (torch.float32, torch.float64) else stacked.float()
        extra = torch.zeros(ctx.world * k, dtype=work.dtype)
        on = self.meter is not None and (self.blocks is None or self.blocks.at_reduce(n))
        row = self.meter.row() if on else [0.0] * (k - 1)
        row.append(float(ctx.stop_asked.is_set()))
        extra[ctx.rank * k : (ctx.rank + 1) * k] = torch.tensor(row, dtype=work.dtype)
        both = torch.cat([work, extra.to(work.device)])
        dist.all_reduce(both, op=dist.ReduceOp.SUM)
        if self.is_main:
            rows = both[n:].view(ctx.world, k).tolist()  # the losses' own host sync follows
            self._stop_asked = self._stop_asked or any(r[-1] > 0 for r in rows)
            if on:
                self.meter.publish(rows)
        return (both[:n] / ctx.world).to(stacked.dtype)

    def _stop_requested(self) -> bool:
        return self._stop_asked or self.ctx.stop_asked.is_set()

    def commands(self, control: Control, checkpoint: bool = False) -> list[tuple[str, Any]]:
        items = None
        if self.is_main:
            items = control.drain()
            if self._stop_requested():
                items.append(("stop", None))
            elif checkpoint:
                items.append(("checkpoint", None))
        return self.ctx.broadcast(items)

    def wait_command(self, control: Control) -> tuple[str, Any]:
        item = None
        if self.is_main:
            item = control.wait(timeout=KEEPALIVE_S) or ("keepalive", None)
            if item[0] == "keepalive" and self.ctx.stop_asked.is_set():
                item = ("stop", None)
        return self.ctx.broadcast(item)

    def rank_states(self, data: Any) -> list[dict[str, Any]] | None:
        """Every rank's RNG states (torch, CUDA) and data state, on rank 0, in rank order;
        the rank view's figures ride along (ranks.json is current at every checkpoint and
        at the end)."""
        from engine.checkpoint import rng_state

        row = self.meter.row() + [0.0] if self.meter is not None else None
        gathered = self.ctx.gather({"rng": rng_state(data.state()), "row": row})
        if gathered is None:
            return None
        if self.meter is not None:
            self.meter.publish([g["row"] for g in gathered], force=True)
        return [g["rng"] for g in gathered]

    def restored(self, ckpt: dict[str, Any]) -> str | None:
        """This rank's own RNG and data states where the checkpoint has one per rank of this
        world size (otherwise every rank keeps rank 0's, restored already)."""
        from engine.checkpoint import restore_rng

        if self.meter is not None:
            self.meter.base_step = int(ckpt["step"])
        ranks = ckpt.get("rng", {}).get("ranks")
        if ranks is not None and len(ranks) == self.ctx.world:
            mine = ranks[self.ctx.rank]
            self._data.load_state(mine.get("data", {}))
            restore_rng(mine)
        elif self.ctx.rank:  # another world size: rank 0's streams, a fresh one elsewhere
            seed = self._prep.config["train"]["seed"]
            torch.manual_seed(rank_seed(seed, self.ctx.rank, int(ckpt["step"])))
        return world_notice(ckpt, self.ctx.world)

    @property
    def _data(self) -> Any:
        return self._prep.data


class RankMeter:
    """This rank's figures for the rank view (engine/ranks.py): its forward passes are
    timed by hooks on the unwrapped model (two clock reads a step, nothing on the device),
    the rest is read at the collective points, where rank 0 also writes ranks.json."""

    def __init__(self, prep: Any, ctx: Any) -> None:
        self.prep, self.ctx = prep, ctx
        self.base_step = 0  # the step training started from (a resume)
        self.forwards = 0  # training forward passes so far
        self.forward_s = 0.0  # their time since the last row
        self._t0 = 0.0
        self._last_t = time.perf_counter()
        self._last_forwards = 0
        self._written = 0.0
        self._last_row = [0.0, 0.0, 0.0]  # samples/s, ms per step, forward ms: last known
        self._cuda = None
        device = getattr(prep, "device", None)
        if device is not None and torch.device(device).type == "cuda":
            self._cuda = torch.device(device)
        self._hooks: list[Any] = []
        self.attach()

    def attach(self) -> None:
        model = self.prep.model
        self._hooks = [model.register_forward_pre_hook(self._before),
                       model.register_forward_hook(self._after)]  # fmt: skip

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _before(self, module: Any, _args: Any) -> None:
        if module.training and torch.is_grad_enabled():
            self._t0 = time.perf_counter()

    def _after(self, module: Any, _args: Any, _out: Any) -> None:
        if module.training and torch.is_grad_enabled():
            self.forward_s += time.perf_counter() - self._t0
            self.forwards += 1

    def memory_mb(self) -> float:
        if self._cuda is not None:
            return torch.cuda.memory_allocated(self._cuda) / 2**20
        import psutil

        return psutil.Process().memory_info().rss / 2**20

    def row(self) -> list[float]:
        """step, samples/s, ms per step, forward ms per step, memory MB (since the last row)."""
        now = time.perf_counter()
        steps = self.forwards - self._last_forwards
        if steps:
            wall = max(now - self._last_t, 1e-9)
            batch = getattr(self.prep.data, "batch_size", 0)
            self._last_row = [
                steps * batch / wall,
                1000 * wall / steps,
                1000 * self.forward_s / steps,
            ]
            self._last_t, self._last_forwards, self.forward_s = now, self.forwards, 0.0
        return [float(self.base_step + self.forwards), *self._last_row, self.memory_mb()]

    def publish(self, rows: list[list[float]], force: bool = False) -> None:
        """Rank 0: rewrite ranks.json with every rank's row, at most every RANKS_EVERY_S
        (`force`: now)."""
        from engine.ranks import FIELDS, RANKS_EVERY_S, write_ranks

        now = time.time()
        if not force and now - self._written < RANKS_EVERY_S:
            return
        self._written = now
        hosts = self.ctx.hosts or [{} for _ in rows]
        kind = "cuda" if self._cuda is not None else "rss"
        out = []
        for rank, (r, h) in enumerate(zip(rows, hosts, strict=False)):
            item = {"rank": rank, "host": h.get("host", ""), "pid": h.get("pid", 0)}
            item.update({k: round(v, 3) for k, v in zip(FIELDS, r, strict=False)})
            item.update(step=int(r[0]), memory_kind=kind, heartbeat=now)
            out.append(item)
        try:
            write_ranks(self.prep.run.path, out, now, SYNC_STEPS)
        except OSError:
            pass  # the view is a convenience: a full disk is the checkpoint's to report


def strategy_for(prep: Any, dist: Any = None) -> OneProcess | DDP:
    """`dist`: an engine.procs.distributed.DistContext when this is one of several processes
    (prep already prepared by `DDP.prepare`)."""
    return OneProcess(prep) if dist is None else DDP(prep, dist)
