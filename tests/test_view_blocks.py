"""The bench's switch of the rank view inside one run (engine/train/view_blocks.py): blocks
alternate on, off, off, on by the step count alone, rank 0 writes each whole block, and the
meter's hooks come and go with the view."""

from __future__ import annotations

import json

from torch import nn

from engine.train.view_blocks import ViewBlocks, view_on


class Meter:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def attach(self) -> None:
        self.calls.append("attach")

    def detach(self) -> None:
        self.calls.append("detach")


def test_blocks_alternate_by_steps_and_only_rank_0_writes(tmp_path):
    log, other = tmp_path / "blocks.jsonl", tmp_path / "other.jsonl"
    main = ViewBlocks(Meter(), True, 45, log)
    rank1 = ViewBlocks(Meter(), False, 45, other)
    states = []
    for n in [20, 20, 5] * 8:  # two syncs and an epoch's end, as a 45-step epoch reduces
        states.append(main.at_reduce(n))
        assert rank1.at_reduce(n) == states[-1]  # every rank agrees without a word
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["on"] for r in rows] == [view_on(b) for b in range(8)] == [
        True, False, False, True, True, False, False, True,
    ]  # fmt: skip
    assert all(r["steps"] == 45 and r["s"] >= 0 for r in rows)
    assert not other.exists()
    assert main.meter.calls == ["detach", "attach", "detach", "attach"]  # blocks 1, 3, 5, 7


def test_rank_meter_hooks_come_and_go(tmp_path):
    from types import SimpleNamespace

    import torch

    from engine.procs.distributed import DistContext
    from engine.train.strategy import RankMeter

    model = nn.Linear(2, 2)
    prep = SimpleNamespace(model=model, data=SimpleNamespace(batch_size=4), device="cpu",
                           run=SimpleNamespace(path=tmp_path))  # fmt: skip
    meter = RankMeter(prep, DistContext(0, 2, 0, "gloo"))
    model(torch.zeros(1, 2))
    assert meter.forwards == 1
    meter.detach()
    model(torch.zeros(1, 2))
    assert meter.forwards == 1 and not model._forward_hooks and not model._forward_pre_hooks
    meter.attach()
    model(torch.zeros(1, 2))
    assert meter.forwards == 2
