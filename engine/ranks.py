"""The per-rank view of a distributed run: ranks.json in the run folder, and its reading.

Rank 0 writes ranks.json (atomically, at most every RANKS_EVERY_S) from the figures every
rank sends along with its losses at the run's existing collective points (no collective
of its own): for each rank its host and pid, step, samples/s and milliseconds per step
over the last interval, the time its own forward passes took per step (the part of a step
that never waits for a peer: a slow rank shows there, while in lockstep every rank's
samples/s is the same), its memory (RSS on CPU, torch.cuda.memory_allocated on CUDA) and
its heartbeat (when rank 0 last heard from it).

Flags, for a live run: `straggler` where a rank's forward passes run at less than
STRAGGLER_RATIO of the median speed of the other ranks (and at least 1 ms per step more),
or its step lags the others; `hang` where no heartbeat came for HANG_S seconds, or three
times the time between two collective points where that is longer (every rank waits in the
next collective for the one that is stuck). Torch-free: viewers read this.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RANKS_FILE = "ranks.json"
RANKS_EVERY_S = 1.0
HANG_S = 15.0
STRAGGLER_RATIO = 0.7
FIELDS = ("step", "samples_per_s", "step_ms", "forward_ms", "memory_mb")


@dataclass(frozen=True)
class RankRow:
    rank: int
    host: str = ""
    pid: int = 0
    step: int = 0
    samples_per_s: float = 0.0
    step_ms: float = 0.0
    forward_ms: float = 0.0
    memory_mb: float = 0.0
    memory_kind: str = "rss"  # or "cuda"
    heartbeat: float = 0.0  # time.time() when rank 0 last heard from it


@dataclass(frozen=True)
class RankView:
    written: float
    rows: tuple[RankRow, ...]
    flags: dict[int, str] = field(default_factory=dict)  # rank -> why it is flagged

    @property
    def world(self) -> int:
        return len(self.rows)


def write_ranks(
    run_path: Path, rows: list[dict[str, Any]], now: float | None = None, sync_steps: int = 20
) -> None:
    """Rewrite ranks.json atomically (a reader sees the old file or the new one);
    `sync_steps`: the steps between two heartbeats."""
    path = Path(run_path) / RANKS_FILE
    written = time.time() if now is None else now
    payload = {"written": written, "sync_steps": sync_steps, "ranks": rows}
    tmp = path.with_name(f".{RANKS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def read_ranks(run_path: Path, live: bool = True, now: float | None = None) -> RankView | None:
    """The rank view of a run, flagged (only a live run hangs or straggles); None where the
    run has no ranks.json or it cannot be read."""
    try:
        data = json.loads((Path(run_path) / RANKS_FILE).read_text())
        names = set(RankRow.__dataclass_fields__)
        rows = tuple(RankRow(**{k: v for k, v in r.items() if k in names}) for r in data["ranks"])
        written = float(data["written"])
        sync_steps = int(data.get("sync_steps", 20))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = time.time() if now is None else now
    return RankView(written, rows, flag_ranks(rows, now, sync_steps) if live else {})


def flag_ranks(
    rows: tuple[RankRow, ...] | list[RankRow], now: float, sync_steps: int = 20
) -> dict[int, str]:
    flags: dict[int, str] = {}
    if not rows:
        return flags
    top = max(r.step for r in rows)
    for r in rows:
        silent = now - r.heartbeat
        if silent > max(HANG_S, 3 * sync_steps * r.step_ms / 1000):
            flags[r.rank] = f"hang: no heartbeat for {silent:.0f} s"
            continue
        others = [o.forward_ms for o in rows if o.rank != r.rank and o.forward_ms > 0]
        if others and r.forward_ms > 0:
            median = statistics.median(others)
            if median / r.forward_ms < STRAGGLER_RATIO and r.forward_ms - median >= 1.0:
                flags[r.rank] = (
                    f"straggler: {median / r.forward_ms:.2f}x the others' speed "
                    f"({r.forward_ms:.1f} vs {median:.1f} ms forward per step)"
                )
                continue
        if top - r.step > 1:
            flags[r.rank] = f"straggler: {top - r.step} steps behind"
    return flags


def _ago(seconds: float) -> str:
    return f"{max(seconds, 0):.1f} s ago" if seconds < 100 else f"{seconds / 60:.0f} min ago"


def _rate(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 10_000 else f"{v:.0f}"


def table_rows(view: RankView, now: float | None = None) -> list[tuple[str, ...]]:
    """The table's cells, a header first: what `show` prints and the app's pane shows."""
    now = time.time() if now is None else now
    out = [("rank", "host", "step", "samples/s", "ms/step", "fwd ms", "memory", "heartbeat", "")]
    for r in view.rows:
        mem = f"{r.memory_mb:,.0f} MB" + (" cuda" if r.memory_kind == "cuda" else "")
        out.append((
            str(r.rank), r.host, f"{r.step:,}", _rate(r.samples_per_s), f"{r.step_ms:.1f}",
            f"{r.forward_ms:.1f}", mem, _ago(now - r.heartbeat), view.flags.get(r.rank, ""),
        ))  # fmt: skip
    return out


def format_table(view: RankView, now: float | None = None) -> list[str]:
    rows = table_rows(view, now)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {2, 3, 4, 5, 6}
    lines = []
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines
