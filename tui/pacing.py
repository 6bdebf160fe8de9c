"""Pacing redraws while a run trains.

Runs train in their own process, so the app does not share the GIL with training: a redraw
costs the run nothing unless the machine is short of cores (on a 2-core laptop a CNN's
intra-op threads use both). So the budget is a share of one core, generous but bounded
(REDRAW_BUDGET in tui/controller.py): the app measures the event loop thread's CPU time
between redraws (drawing, layout, compositing, everything) and spaces the next redraw so that
this cost stays within budget. Events are still drained every tick and keys handled at once;
only the pictures update less often when they are expensive.
"""

from __future__ import annotations

import time


class RedrawPacer:
    def __init__(self, min_interval: float, budget: float = 0.03,
                 max_interval: float = 2.0) -> None:
        self.min_interval = min_interval
        self.budget = budget
        self.max_interval = max_interval
        self.interval = min_interval
        self._wall = 0.0
        self._cpu = 0.0
        self._primed = False

    def reset(self) -> None:
        self.interval = self.min_interval
        self._primed = False

    def due(self) -> bool:
        if not self._primed:
            return True
        return time.perf_counter() - self._wall >= self.interval

    def drawn(self) -> None:
        """Call after each redraw: sets the interval to the next one from the cost since the
        previous redraw (the frame a redraw causes is rendered after it, so its cost lands in
        the next measurement)."""
        wall, cpu = time.perf_counter(), time.thread_time()
        if self._primed:
            cost = cpu - self._cpu
            self.interval = min(self.max_interval, max(self.min_interval, cost / self.budget))
        self._wall, self._cpu, self._primed = wall, cpu, True
