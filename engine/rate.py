"""A run's speed and ETA as a user should read them: steps per second over the recent
training time, paused time and the warm-up of the first steps left out.

Fed with the StepMetrics of a run (`add(event.elapsed_s, event.last_step)`): elapsed_s is
the run's training time with pauses excluded, so a pause does not slow the rate down. The
first flush holds the start-up (imports, allocator, caches, the first batches): the rate is
measured from it on, over the last `window_s` seconds of training time, so it follows a
change of speed without jumping with every flush. Plain Python, no torch: the headless
printer and the app use the same one.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW_S = 10.0


class RateMeter:
    """`add(elapsed_s, step)` per flush; `steps_per_s` (None until two flushes) and
    `eta_s(total_steps)`."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._points: deque[tuple[float, int]] = deque()  # (training time, step)

    def reset(self) -> None:
        """A new start (a resumed run): what came before says nothing of the speed now."""
        self._points.clear()

    def add(self, elapsed_s: float, step: int) -> None:
        points = self._points
        if points and (step < points[-1][1] or elapsed_s < points[-1][0]):
            points.clear()  # a restart without a reset: measure again
        if points and elapsed_s == points[-1][0]:
            return  # no training time between them: nothing to learn
        points.append((elapsed_s, step))
        # keep one point at or before the window's start, so the window spans window_s
        while len(points) > 2 and points[1][0] <= elapsed_s - self.window_s:
            points.popleft()

    @property
    def empty(self) -> bool:
        return not self._points

    @property
    def steps_per_s(self) -> float | None:
        points = self._points
        if len(points) < 2:
            return None
        (t0, s0), (t1, s1) = points[0], points[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def eta_s(self, total_steps: int, step: int | None = None) -> float | None:
        """Seconds of training left to `total_steps` at the current rate (None: not known)."""
        rate = self.steps_per_s
        if not rate or rate <= 0 or not total_steps:
            return None
        now = self._points[-1][1] if step is None else step
        return max(0, total_steps - now) / rate


def clock(seconds: float | None) -> str:
    """0:04, 12:31, 3:02:11."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(max(seconds, 0))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
