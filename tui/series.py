"""Bounded series for plots: memory and redraw cost stay fixed however long a run gets.

`DecimatedSeries` keeps the whole run in at most `capacity` buckets of equal width (in
steps); when it fills up, neighbouring buckets merge pairwise and the width doubles, so an
append costs O(1) amortised; `load` starts it from a run's pre-decimated summary (min, max
and mean per bucket), so opening a run costs the same at any length. `RecentWindow` keeps
the last `size` raw points.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Iterable, Sequence


class DecimatedSeries:
    """Mean, min and max of y over equal-width buckets of consecutive x values."""

    def __init__(self, capacity: int = 2048) -> None:
        if capacity < 2 or capacity % 2:
            raise ValueError("capacity must be an even number >= 2")
        self.capacity = capacity
        self.clear()

    def clear(self) -> None:
        self.width = 1  # raw points per bucket
        self.total = 0  # raw points appended
        self._x: list[float] = []  # sum of x per bucket (for its centre)
        self._n: list[int] = []  # raw points per bucket
        self._sum: list[float] = []  # sum of finite y
        self._cnt: list[int] = []  # finite y
        self._min: list[float] = []
        self._max: list[float] = []
        self._open = False  # whether the last bucket is still filling

    def __len__(self) -> int:
        return len(self._n)

    def append(self, x: float, y: float) -> None:
        self.total += 1
        finite = math.isfinite(y)
        if self._open:
            i = len(self._n) - 1
            self._x[i] += x
            self._n[i] += 1
            if finite:
                self._sum[i] += y
                self._cnt[i] += 1
                if y < self._min[i]:
                    self._min[i] = y
                if y > self._max[i]:
                    self._max[i] = y
            self._open = self._n[i] < self.width
            return
        if len(self._n) == self.capacity:
            self._merge_pairs()
        self._x.append(x)
        self._n.append(1)
        self._sum.append(y if finite else 0.0)
        self._cnt.append(1 if finite else 0)
        self._min.append(y if finite else math.inf)
        self._max.append(y if finite else -math.inf)
        self._open = self.width > 1

    def extend(self, first_x: int, ys: Iterable[float]) -> None:
        """Append consecutive points x = first_x, first_x + 1, ..."""
        for i, y in enumerate(ys):
            self.append(first_x + i, y)

    def truncate(self, last_x: float) -> None:
        """Forget the points after `last_x` (a resumed run logs those steps again). A bucket
        holds consecutive x values, so its last one is its centre + (n - 1) / 2; a bucket that
        straddles `last_x` goes as a whole (at most `width` points)."""
        while self._n and self._x[-1] / self._n[-1] + (self._n[-1] - 1) / 2 > last_x:
            self.total -= self._n[-1]
            for values in (self._x, self._n, self._sum, self._cnt, self._min, self._max):
                values.pop()
        self._open = bool(self._n) and self._n[-1] < self.width

    def load(self, ends: Sequence[int], mins: Sequence[float], maxs: Sequence[float],
             means: Sequence[float], per_point: int) -> None:
        """Replace the series by pre-decimated buckets (a run's summary): bucket i holds the
        steps after ends[i - 1] up to ends[i] (from step 1), `per_point` of them (the last
        maybe fewer), with their min, max and mean (NaN: no finite value). Merged pairwise
        until they fit the capacity; appends go on after the last end."""
        self.clear()
        prev = 0
        for end, lo, hi, mean in zip(ends, mins, maxs, means, strict=True):
            n = int(end) - prev
            if n <= 0:
                continue
            finite = math.isfinite(mean)
            self._x.append(n * (prev + 1 + end) / 2)
            self._n.append(n)
            self._sum.append(mean * n if finite else 0.0)
            self._cnt.append(n if finite else 0)
            self._min.append(lo if math.isfinite(lo) else math.inf)
            self._max.append(hi if math.isfinite(hi) else -math.inf)
            self.total += n
            prev = int(end)
        self.width = max(1, int(per_point))
        while len(self._n) > self.capacity:
            self._merge_pairs()
        self._open = bool(self._n) and self._n[-1] < self.width

    def _merge_pairs(self) -> None:
        def pairs(values: list, fn) -> list:
            return [fn(values[i], values[i + 1]) for i in range(0, len(values) - 1, 2)]

        add = operator.add
        self._x = pairs(self._x, add)
        self._n = pairs(self._n, add)
        self._sum = pairs(self._sum, add)
        self._cnt = pairs(self._cnt, add)
        self._min = pairs(self._min, min)
        self._max = pairs(self._max, max)
        self.width *= 2
        self._open = False

    def points(self, max_points: int | None = None) -> tuple[list[float], list[float]]:
        """(x, mean y) per bucket, merged further down to at most `max_points` points."""
        xs, ys = [], []
        for xsum, n, s, c in zip(self._x, self._n, self._sum, self._cnt, strict=True):
            if c:
                xs.append(xsum / n)
                ys.append(s / c)
        if max_points is not None:
            xs, ys = downsample(xs, ys, max_points)
        return xs, ys

    def envelope(self, max_points: int | None = None
                 ) -> tuple[list[float], list[float], list[float]]:
        """(x, min y, max y) per bucket that holds finite values; with `max_points`, groups
        of consecutive buckets merged (min of mins, max of maxes) so at most that many
        remain: a one-step spike stays in the max however far it is merged."""
        xs, lo, hi = [], [], []
        for xsum, n, c, mn, mx in zip(self._x, self._n, self._cnt, self._min, self._max,
                                      strict=True):
            if c:
                xs.append(xsum / n)
                lo.append(mn)
                hi.append(mx)
        if max_points is not None and 0 < max_points < len(xs):
            group = math.ceil(len(xs) / max_points)
            xs = [sum(xs[i : i + group]) / len(xs[i : i + group])
                  for i in range(0, len(xs), group)]
            lo = [min(lo[i : i + group]) for i in range(0, len(lo), group)]
            hi = [max(hi[i : i + group]) for i in range(0, len(hi), group)]
        return xs, lo, hi


class RecentWindow:
    """The last `size` (x, y) points, raw."""

    def __init__(self, size: int = 2000) -> None:
        self._points: deque[tuple[float, float]] = deque(maxlen=size)

    def clear(self) -> None:
        self._points.clear()

    def __len__(self) -> int:
        return len(self._points)

    def extend(self, first_x: int, ys: Sequence[float]) -> None:
        # only the tail can survive, so skip what would be pushed out at once
        start = max(0, len(ys) - (self._points.maxlen or len(ys)))
        for i in range(start, len(ys)):
            self._points.append((first_x + i, ys[i]))

    def truncate(self, last_x: float) -> None:
        while self._points and self._points[-1][0] > last_x:
            self._points.pop()

    def points(self, max_points: int | None = None) -> tuple[list[float], list[float]]:
        xs = [x for x, y in self._points if math.isfinite(y)]
        ys = [y for _, y in self._points if math.isfinite(y)]
        if max_points is not None:
            xs, ys = downsample(xs, ys, max_points)
        return xs, ys


def downsample(xs: list[float], ys: list[float], max_points: int) -> tuple[list, list]:
    """Means over equal groups of consecutive points, so that at most `max_points` remain."""
    n = len(xs)
    if n <= max_points or max_points <= 0:
        return xs, ys
    group = math.ceil(n / max_points)
    out_x, out_y = [], []
    for i in range(0, n, group):
        chunk_x, chunk_y = xs[i : i + group], ys[i : i + group]
        out_x.append(sum(chunk_x) / len(chunk_x))
        out_y.append(sum(chunk_y) / len(chunk_y))
    return out_x, out_y


def smooth(ys: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing)."""
    if weight <= 0:
        return list(ys)
    out, avg, norm = [], 0.0, 0.0
    for y in ys:
        avg = avg * weight + (1 - weight) * y
        norm = norm * weight + (1 - weight)
        out.append(avg / norm)
    return out
