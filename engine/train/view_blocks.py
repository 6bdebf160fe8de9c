"""The rank view switched on and off inside one run, for bench/dist_view.py's side-by-side.

Two separate 2-process runs differ by 10% or more on a shared machine (start-up, placement,
the neighbours' load), far more than the view costs. So the bench runs once with
TORCHDECK_RANK_VIEW=blocks and TORCHDECK_RANK_VIEW_BLOCKS=<steps>:<file>: the view is on
and off in alternating blocks of that many steps (on, off, off, on, ...: a drift in the
machine's load favours neither side), decided from the step count so every rank agrees
without a word, and rank 0 appends each block's steps and seconds to the file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV = "TORCHDECK_RANK_VIEW_BLOCKS"


def view_on(block: int) -> bool:
    return block % 4 in (0, 3)


class ViewBlocks:
    def __init__(self, meter: Any, is_main: bool, steps: int, path: Path) -> None:
        self.meter, self.is_main, self.steps, self.path = meter, is_main, steps, path
        self.done = 0  # steps whose losses were reduced, in this process
        self.block = 0
        self.start_step = 0
        self.t0 = time.perf_counter()

    @classmethod
    def from_env(cls, meter: Any, is_main: bool) -> ViewBlocks:
        steps, _, path = os.environ[ENV].partition(":")
        return cls(meter, is_main, int(steps), Path(path))

    def at_reduce(self, n: int) -> bool:
        """At a reduce of `n` steps' losses: whether the view is on from here."""
        self.done += n
        block = self.done // self.steps
        if block != self.block:
            now = time.perf_counter()
            if self.is_main:
                line = {"on": view_on(self.block), "steps": self.done - self.start_step,
                        "s": now - self.t0}  # fmt: skip
                with self.path.open("a") as f:
                    f.write(json.dumps(line) + "\n")
            if view_on(block) != view_on(self.block):
                (self.meter.attach if view_on(block) else self.meter.detach)()
            self.block, self.start_step, self.t0 = block, self.done, time.perf_counter()
        return view_on(self.block)
