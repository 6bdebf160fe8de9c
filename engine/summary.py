"""A compact multi-resolution summary of a run's per-step series, beside its event log.

    runs/<id>/summary/
      meta            the committed state (JSON): version, steps, lengths of the files
                      below, and how far into events.jsonl it reaches (byte offset, and the
                      length and CRC-32 of the line ending there, so that a stale or foreign
                      summary is noticed); two slots written in turn, each with its length,
                      CRC-32 and sequence number: a torn write leaves the other slot
      raw.f64         every step's training loss, float64 (bitwise the logged values)
      l<j>.f64        level j: one record per bucket of 64 * 2^(j-1) steps:
                      min, max, sum, count (of finite-or-inf values; NaN counts as missing), last
      lr.f64          (first step, lr) at each change of the learning rate
      epochs.f64      one record per epoch: epoch, step, train_loss, val_loss, up to 4 metrics
      lock            flock: held by the one process that may write the folder

Every .f64 file starts with a 16-byte header (magic, version, record width) and is only
appended to (or cut back, when a resumed run re-logs steps): meta says how many
records are valid, so a torn tail (a writer killed mid-append) is never trusted, and the
next writer cuts it off. A summary whose meta is missing, unreadable, of another
version, or does not match events.jsonl at its offset is rebuilt from the log; a summary
behind the log (the writer was killed, or the log was flushed after its last commit) is
brought up to date from its offset: the log stays the truth.

`SummaryWriter` is an event sink for the run-folder writer (it commits only what the log
already holds on disk); `read_curve` draws a run at any length from about `max_points`
records; `history_of` gives a follower the History event and the log offset to tail from.
A run written before summaries existed is summarised on its first open, streaming its log
line by line, and the summary is saved for the next open.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import events as ev

SUMMARY_DIR = "summary"
META_FILE = "meta"
SLOT = 16384  # bytes per meta slot
COMMIT_EVERY_S = 0.2  # the writer commits at most this often (and at the end)
VERSION = 1
BASE = 64  # steps per bucket at level 1
FACTOR = 2  # buckets of level j per bucket of level j + 1
LEVELS = 40  # 64 * 2^39 steps: more than any run
METRIC_SLOTS = 4
HEADER = 16
MAGIC = b"TDSUM"
TAIL = 512  # raw steps at the newest end of a curve
COMMIT_BYTES = 32 << 20  # a rebuild commits every this many bytes of log
TRACKED = ("run_started", "epoch", "params", "fit", "hparam", "checkpoint", "paused",
           "resumed", "warning", "finished", "failed")  # fmt: skip

EVENTS_FILE = "events.jsonl"


class _Stale(Exception):
    """The files do not hold what meta says (torn, cut by a writer, foreign)."""


def bucket_size(level: int) -> int:
    return BASE * FACTOR ** (level - 1)


# --- records ------------------------------------------------------------------------------


def _records(values: np.ndarray) -> np.ndarray:
    """Per-step records (min, max, sum, count, last) of raw values; NaN is a missing step."""
    out = np.empty((len(values), 5))
    missing = np.isnan(values)
    out[:, 0] = values
    out[:, 1] = values
    out[:, 2] = np.where(missing, 0.0, values)
    out[:, 3] = ~missing
    out[:, 4] = values
    return out


def _combine(groups: np.ndarray) -> np.ndarray:
    """(k, size, 5) records -> (k, 5): one record per group."""
    out = np.empty((groups.shape[0], 5))
    out[:, 0] = np.fmin.reduce(groups[:, :, 0], axis=1)
    out[:, 1] = np.fmax.reduce(groups[:, :, 1], axis=1)
    out[:, 2] = groups[:, :, 2].sum(axis=1)
    out[:, 3] = groups[:, :, 3].sum(axis=1)
    out[:, 4] = groups[:, -1, 4]
    return out


# --- files --------------------------------------------------------------------------------


class _Series:
    """An append-only file of float64 records, `n` of them valid. Read-only: what is
    appended or cut stays in memory (a follower catching up a live run's last seconds)."""

    def __init__(self, path: Path, width: int, n: int, writable: bool) -> None:
        self.path, self.width, self.n, self.writable = path, width, n, writable
        self.rec = 8 * width
        self.base_n = n  # records read from the file
        self.parts: list[np.ndarray] = []  # appended in memory (read-only), in order
        self.fd: int | None = None
        try:
            self.fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError:
            if n:
                raise _Stale(f"{path.name} is missing") from None
            return
        head = os.pread(self.fd, HEADER, 0)
        size = os.fstat(self.fd).st_size
        if head != self._header() or size < HEADER + n * self.rec:
            if n:
                os.close(self.fd)
                raise _Stale(f"{path.name} is torn or foreign")
            if writable:
                os.ftruncate(self.fd, 0)
        elif writable:
            os.ftruncate(self.fd, HEADER + n * self.rec)  # an uncommitted tail: never trusted

    def _header(self) -> bytes:
        return MAGIC + bytes([VERSION]) + self.width.to_bytes(2, "little") + bytes(8)

    @property
    def extra(self) -> np.ndarray:
        if len(self.parts) != 1:
            self.parts = [np.concatenate(self.parts) if self.parts else np.empty((0, self.width))]
        return self.parts[0]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def append(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        if self.writable:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not self.n and os.fstat(self.fd).st_size < HEADER:
                os.pwrite(self.fd, self._header(), 0)
            os.pwrite(
                self.fd, np.ascontiguousarray(rows, "<f8").tobytes(), HEADER + self.n * self.rec
            )
            self.base_n = self.n + len(rows)
        else:
            self.parts.append(rows)
        self.n += len(rows)

    def truncate(self, k: int) -> None:
        if k >= self.n:
            return
        if self.writable:
            if self.fd is not None:
                os.ftruncate(self.fd, HEADER + k * self.rec)
            self.base_n = k
        elif k <= self.base_n:
            self.base_n, self.parts = k, []
        else:
            self.parts = [self.extra[: k - self.base_n]]
        self.n = k

    def read(self, a: int, b: int) -> np.ndarray:
        a, b = max(0, a), min(b, self.n)
        if b <= a:
            return np.empty((0, self.width))
        parts = []
        fb = min(b, self.base_n)
        if a < fb:
            assert self.fd is not None
            data = os.pread(self.fd, (fb - a) * self.rec, HEADER + a * self.rec)
            if len(data) != (fb - a) * self.rec:
                raise _Stale(f"{self.path.name} was cut while read")
            parts.append(np.frombuffer(data, "<f8").reshape(-1, self.width))
        if b > self.base_n:
            parts.append(self.extra[max(0, a - self.base_n) : b - self.base_n])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Records at these (sorted) indices, each read on its own (a decimated series)."""
        if len(index) == 0:
            return np.empty((0, self.width))
        if len(index) == index[-1] - index[0] + 1:
            return self.read(int(index[0]), int(index[-1]) + 1)
        return np.concatenate([self.read(int(i), int(i) + 1) for i in index])

    def count_upto(self, column: int, limit: float) -> int:
        """How many records from the start have column <= limit (the column is sorted)."""
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self.read(mid, mid + 1)[0, column] <= limit:
                lo = mid + 1
            else:
                hi = mid
        return lo


def _pick(n: int, max_points: int) -> np.ndarray:
    """At most max_points indices of 0..n-1, evenly spread, the last always in."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


# --- the summary --------------------------------------------------------------------------


class _Summary:
    """The summary's state: its files, the partial buckets of every level, and how far
    into the log it reaches. `writable` only with the folder's lock held."""

    def __init__(self, run_path: Path, writable: bool, meta: dict[str, Any] | None = None) -> None:
        self.run_path = run_path
        self.folder = run_path / SUMMARY_DIR
        self.writable = writable
        self.meta_fd: int | None = None
        self.seq = 0
        self.cuts: list[tuple[int, int, int]] = []  # (steps, lr, epochs) left by each cut
        meta = meta or {}
        self.n = int(meta.get("n", 0))
        self.offset = int(meta.get("offset", 0))
        self.line_len = int(meta.get("line_len", 0))
        self.line_crc = int(meta.get("line_crc", 0))
        self.metrics: list[str] = list(meta.get("metrics", []))
        self.lines: dict[str, list[int]] = {k: list(v) for k, v in meta.get("lines", {}).items()}
        self.raw = _Series(self.folder / "raw.f64", 1, self.n, writable)
        self.levels = [self.raw] + [
            _Series(self.folder / f"l{j}.f64", 5, self.n // bucket_size(j), writable)
            for j in range(1, LEVELS + 1)
        ]
        self.lr = _Series(self.folder / "lr.f64", 2, int(meta.get("n_lr", 0)), writable)
        self.epochs = _Series(
            self.folder / "epochs.f64", 4 + METRIC_SLOTS, int(meta.get("n_epochs", 0)), writable
        )
        self._reload()

    def close(self) -> None:
        for series in (*self.levels, self.lr, self.epochs):
            series.close()
        if self.meta_fd is not None:
            os.close(self.meta_fd)
            self.meta_fd = None

    def _reload(self) -> None:
        """The partial buckets (pending[j]: level-j records of the unfinished level-j+1
        bucket) and the last lr, from the files."""
        n = self.n
        self.pending = [_records(self.raw.read(n - n % BASE, n)[:, 0])]
        for j in range(1, LEVELS + 1):
            c = n // bucket_size(j)
            self.pending.append(self.levels[j].read(c - c % FACTOR, c))
        last = self.lr.read(self.lr.n - 1, self.lr.n)
        self.last_lr = float(last[0, 1]) if len(last) else None

    def meta(self) -> dict[str, Any]:
        return {
            "version": VERSION, "base": BASE, "factor": FACTOR, "n": self.n,
            "n_lr": self.lr.n, "n_epochs": self.epochs.n, "metrics": list(self.metrics),
            "offset": self.offset, "line_len": self.line_len, "line_crc": self.line_crc,
            "lines": {k: list(v) for k, v in self.lines.items()},
        }  # fmt: skip

    def commit(self, meta: dict[str, Any] | None = None) -> None:
        """Make `meta` (by default the current state) the one a reader trusts."""
        assert self.writable
        if self.meta_fd is None:
            self.meta_fd = os.open(self.folder / META_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            self.seq = _read_slots(self.meta_fd)[0] + 1
        body = json.dumps(meta or self.meta()).encode()
        if len(body) > SLOT - 16:
            raise OSError("summary meta too long")
        head = struct.pack("<IIQ", len(body), zlib.crc32(body), self.seq)
        os.pwrite(self.meta_fd, head + body, (self.seq % 2) * SLOT)
        self.seq += 1

    # --- applying the log -----------------------------------------------------------------
    def steps(self, first_step: int, losses: Any, lr: float, lrs: Any = ()) -> None:
        """`lrs`: each step's rate where a schedule moves it (then `lr` is the last one's);
        the lr series keeps the first and the last of each batch (a curve to draw)."""
        values = np.asarray(losses, dtype=np.float64)
        keep = first_step - 1
        if keep < self.n:
            self.cut(keep, epochs=False)
        elif keep > self.n:  # a gap (never in a healthy log): missing steps are NaN
            values = np.concatenate([np.full(keep - self.n, np.nan), values])
        if not len(values):
            return
        self.raw.append(values.reshape(-1, 1))
        self.n += len(values)
        recs = _records(values)
        for j in range(LEVELS):
            pend = np.concatenate([self.pending[j], recs]) if len(self.pending[j]) else recs
            size = BASE if j == 0 else FACTOR
            k = len(pend) // size
            self.pending[j] = pend[k * size :]
            if not k:
                break
            recs = _combine(pend[: k * size].reshape(k, size, 5))
            self.levels[j + 1].append(recs)
        points = [(first_step, lrs[0]), (first_step + len(lrs) - 1, lrs[-1])] if lrs else []
        for step, rate in points or [(first_step, lr)]:
            if rate != self.last_lr:
                self.lr.append(np.array([[float(max(step, 1)), rate]]))
                self.last_lr = rate

    def started(self, start_step: int) -> None:
        if start_step < self.n:  # a resume re-logs the steps after its checkpoint
            self.cut(start_step, epochs=True)

    def epoch(self, epoch: int, step: int, train_loss: Any, val_loss: Any, metrics: dict) -> None:
        row = [epoch, step, _num(train_loss), _num(val_loss)] + [math.nan] * METRIC_SLOTS
        for name, value in (metrics or {}).items():
            if name not in self.metrics and len(self.metrics) < METRIC_SLOTS:
                self.metrics.append(name)
            if name in self.metrics:
                row[4 + self.metrics.index(name)] = _num(value)
        self.epochs.append(np.array([row], dtype=np.float64))

    def cut(self, keep: int, epochs: bool) -> None:
        """Forget steps after `keep` (and, at a resume, epochs and lr changes after it)."""
        for j, series in enumerate(self.levels):
            series.truncate(keep // (bucket_size(j) if j else 1))
        self.n = keep
        self.lr.truncate(self.lr.count_upto(0, keep))
        if epochs:
            self.epochs.truncate(self.epochs.count_upto(1, keep))
        self.cuts.append((self.n, self.lr.n, self.epochs.n))
        self._reload()

    def apply(self, item: dict[str, Any], start: int, line: bytes) -> None:
        """One line of the log (parsed), which starts at byte `start`."""
        kind = item.get("type")
        try:
            if kind == "steps":
                self.steps(item["first_step"], item["losses"], item["lr"], item.get("lrs") or ())
            elif kind == "run_started":
                self.started(item.get("start_step", 0))
            elif kind == "epoch":
                self.epoch(item["epoch"], item["step"], item["train_loss"],
                           item.get("val_loss"), item.get("metrics") or {})  # fmt: skip
        except (KeyError, TypeError, ValueError):
            pass
        self.moved(kind, start, line)

    def moved(self, kind: Any, start: int, line: bytes) -> None:
        if kind in TRACKED:
            self.lines[kind] = [start, len(line)]
        self.lines["last"] = [start, len(line)]
        self.offset = start + len(line)
        self.line_len = len(line)
        self.line_crc = zlib.crc32(line)

    def catch_up(self, end: int | None = None, commit_every: int = 0) -> None:
        """Apply the log's complete lines from `offset` on (to byte `end`)."""
        path = self.run_path / EVENTS_FILE
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return
        with fh:
            fh.seek(self.offset)
            pos, since = self.offset, 0
            for line in fh:
                if not line.endswith(b"\n") or (end is not None and pos + len(line) > end):
                    break
                try:
                    item = json.loads(line)
                except ValueError:
                    item = None
                if isinstance(item, dict):
                    self.apply(item, pos, line)
                else:
                    self.moved(None, pos, line)
                pos += len(line)
                since += len(line)
                if commit_every and since >= commit_every:
                    self.commit()
                    since = 0

    # --- reading ----------------------------------------------------------------------------
    def curve(self, max_points: int = 2000, tail: int = TAIL) -> Curve:
        n, max_points = self.n, max(1, max_points)
        if n <= max_points:
            per, recs = 1, _records(self.raw.read(0, n)[:, 0])
        else:
            j = 1
            while -(-n // bucket_size(j)) > max_points:
                j += 1
            per = bucket_size(j)
            recs = self.levels[j].read(0, n // per)
            partial = [self.pending[i] for i in range(j - 1, -1, -1) if len(self.pending[i])]
            if partial:
                rest = np.concatenate(partial)
                recs = np.concatenate([recs, _combine(rest.reshape(1, -1, 5))])
        steps = np.minimum(np.arange(1, len(recs) + 1, dtype=np.int64) * per, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = recs[:, 2] / recs[:, 3]
        lr = self.lr.rows(_pick(self.lr.n, max_points))
        ep = self.epochs.rows(_pick(self.epochs.n, max_points))
        t0 = max(0, n - tail)
        return Curve(
            last_step=n,
            per_point=per,
            steps=steps,
            min=recs[:, 0],
            max=recs[:, 1],
            mean=mean,
            last=recs[:, 4],
            tail_steps=np.arange(t0 + 1, n + 1, dtype=np.int64),
            tail_losses=self.raw.read(t0, n)[:, 0],
            lr_steps=lr[:, 0].astype(np.int64),
            lr=lr[:, 1],
            epochs=ep[:, 0].astype(np.int64),
            epoch_steps=ep[:, 1].astype(np.int64),
            train_loss=ep[:, 2],
            val_loss=ep[:, 3],
            metrics={name: ep[:, 4 + i] for i, name in enumerate(self.metrics)},
            n_epochs=self.epochs.n,
            offset=self.offset,
        )


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


@dataclass
class Curve:
    """A run's series, drawn from at most about max_points records per series.

    Points: each covers `per_point` steps (the last point maybe fewer), ending at `steps`;
    min/max/mean/last of the losses in it (NaN where every step in it was NaN). The tail:
    the newest raw steps, exact. lr: (step, lr) at changes; epochs: one row per epoch
    (NaN val_loss / metric where the epoch had none), evenly thinned past max_points."""

    last_step: int
    per_point: int
    steps: np.ndarray
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    last: np.ndarray
    tail_steps: np.ndarray
    tail_losses: np.ndarray
    lr_steps: np.ndarray
    lr: np.ndarray
    epochs: np.ndarray
    epoch_steps: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    n_epochs: int = 0
    offset: int = 0  # bytes of events.jsonl it covers


# --- opening ------------------------------------------------------------------------------


def _lock(folder: Path, block: bool) -> int | None:
    """The folder's write lock (an fd to close to let go), or None if another holds it or
    the folder cannot be written."""
    try:
        folder.mkdir(exist_ok=True)
        fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


def _log_matches(run_path: Path, meta: dict[str, Any]) -> bool:
    offset, length = int(meta.get("offset", 0)), int(meta.get("line_len", 0))
    if offset == 0:
        return True
    try:
        with open(run_path / EVENTS_FILE, "rb") as fh:
            fh.seek(offset - length)
            line = fh.read(length)
    except (OSError, ValueError):
        return False
    return len(line) == length and line.endswith(b"\n") and zlib.crc32(line) == meta.get("line_crc")


def _read_slots(fd: int) -> tuple[int, dict[str, Any] | None]:
    """(sequence number, meta) of the newest intact slot; (-1, None) if none is."""
    data = os.pread(fd, 2 * SLOT, 0)
    best: tuple[int, dict[str, Any] | None] = (-1, None)
    for at in (0, SLOT):
        head = data[at : at + 16]
        if len(head) < 16:
            continue
        length, crc, seq = struct.unpack("<IIQ", head)
        body = data[at + 16 : at + 16 + length]
        if length > SLOT - 16 or len(body) != length or zlib.crc32(body) != crc:
            continue
        try:
            meta = json.loads(body)
        except ValueError:
            continue
        if isinstance(meta, dict) and seq > best[0]:
            best = (seq, meta)
    return best


def _load_meta(run_path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(run_path / SUMMARY_DIR / META_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        meta = _read_slots(fd)[1]
    except OSError:
        return None
    finally:
        os.close(fd)
    if meta is None:
        return None
    if (meta.get("version"), meta.get("base"), meta.get("factor")) != (VERSION, BASE, FACTOR):
        return None
    return meta if _log_matches(run_path, meta) else None


def open_summary(run_path: Path, writable: bool) -> _Summary:
    """The committed summary (files cut back to it when writable), or an empty one when
    there is none or it cannot be trusted; not yet caught up with the log."""
    meta = _load_meta(run_path)
    if meta is not None:
        try:
            return _Summary(run_path, writable, meta)
        except (_Stale, OSError, ValueError, TypeError):
            pass
    if writable:
        for path in (run_path / SUMMARY_DIR).glob("*.f64"):
            path.unlink(missing_ok=True)
        (run_path / SUMMARY_DIR / META_FILE).unlink(missing_ok=True)
    return _Summary(run_path, writable)


def _reading(run_path: Path, read: Any) -> Any:
    """read(summary) on the current summary; again if a writer cut the files meanwhile."""
    for attempt in range(3):
        summary = _open_current(run_path, fresh=attempt == 2)
        try:
            return read(summary)
        except _Stale:
            continue
        finally:
            summary.close()
    raise OSError(f"{run_path}: the summary keeps changing under the reader")


def _open_current(run_path: Path, fresh: bool = False) -> _Summary:
    """The summary caught up with the log's complete lines; saved when no writer holds it.
    fresh: from the log alone, in memory (when the files keep changing under us)."""
    run_path = Path(run_path)
    for _ in range(0 if fresh else 3):
        fd = _lock(run_path / SUMMARY_DIR, block=False)
        try:
            summary = open_summary(run_path, writable=fd is not None)
            summary.catch_up(commit_every=COMMIT_BYTES if fd is not None else 0)
            if fd is not None:
                summary.commit()
            return summary
        except _Stale:  # a writer cut the files under us (a resume): look again
            continue
        finally:
            if fd is not None:
                os.close(fd)
    summary = _Summary(run_path, writable=False)
    summary.catch_up()
    return summary


def read_curve(run_dir: Path | str, max_points: int = 2000, tail: int = TAIL) -> Curve:
    """The run's loss curve at the finest level that gives at most max_points points, plus
    the newest `tail` raw steps, its lr changes and its epochs."""
    return _reading(Path(run_dir), lambda summary: summary.curve(max_points, tail))


def ensure_summary(run_dir: Path | str) -> None:
    """Bring the run's summary up to date with its log (summarising an old run once)."""
    _open_current(Path(run_dir)).close()


def _read_line(run_path: Path, start: int, length: int) -> ev.Event | None:
    try:
        with open(run_path / EVENTS_FILE, "rb") as fh:
            fh.seek(start)
            return ev.event_from_json(fh.read(length).decode())
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def history_of(run_dir: Path | str, max_points: int = 2000) -> tuple[ev.History, ev.Event | None]:
    """The History event of the run as its log holds it now, and the log's last event
    before History.offset (where a follower goes on tailing)."""
    run_path = Path(run_dir)

    def read(summary: _Summary) -> tuple[Curve, dict[str, list[int]], float | None]:
        head = summary.raw.read(0, 1)
        first = float(head[0, 0]) if len(head) else None
        return summary.curve(max_points), dict(summary.lines), first

    c, lines, first = _reading(run_path, read)
    since = lines.get("run_started", [0, 0])[0]
    tracked = sorted((v[0], v[1]) for k, v in lines.items() if k in TRACKED and v[0] >= since)
    events = tuple(e for e in (_read_line(run_path, s, n) for s, n in tracked) if e is not None)
    last_at = lines.get("last")
    last = _read_line(run_path, *last_at) if last_at else None

    def floats(a: np.ndarray) -> tuple[float, ...]:
        return tuple(a.tolist())

    history = ev.History(
        last_step=c.last_step,
        offset=c.offset,
        per_point=c.per_point,
        steps=tuple(c.steps.tolist()),
        loss_min=floats(c.min),
        loss_max=floats(c.max),
        loss_mean=floats(c.mean),
        loss_last=floats(c.last),
        tail_steps=tuple(c.tail_steps.tolist()),
        tail_losses=floats(c.tail_losses),
        lr_steps=tuple(c.lr_steps.tolist()),
        lr=floats(c.lr),
        epochs=tuple(c.epochs.tolist()),
        epoch_steps=tuple(c.epoch_steps.tolist()),
        train_loss=floats(c.train_loss),
        val_loss=tuple(None if math.isnan(v) else v for v in c.val_loss.tolist()),
        metrics={k: floats(v) for k, v in c.metrics.items()},
        n_epochs=c.n_epochs,
        first_loss=first,
        events=events,
    )
    return history, last


# --- the writer ----------------------------------------------------------------------------


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json_line(event: ev.Event) -> bytes:
    """The event's line in events.jsonl, byte for byte as RunDir.append_event writes it
    (event_to_json), without dataclasses.asdict's deep copy for flat events."""
    item: dict[str, Any] = {"type": event.type}  # first, as in Event.to_dict
    item.update(_flat(event))
    if item.get("lrs") == ():  # StepMetrics leaves an empty lrs out (its to_dict)
        del item["lrs"]
    return (_ENCODER.encode(item) + "\n").encode()  # json.dumps(item, separators=...)


def _flat(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            value = [_flat(v) for v in value]  # ParamStats.params
        out[f.name] = value
    return out


class SummaryWriter:
    """The run-folder writer's sink for the summary: `writer(event)` for every event, in the
    order they are appended to events.jsonl (after each append). It commits a state only
    once the log holds, on disk, every line that state covers, so a kill -9 at any moment
    leaves a summary at or behind the log (caught up on the next open), never ahead.

    `SummaryWriter.for_run(run)` gives a no-op for a folder-less writer (ranks other than
    0), and one that turns itself off (the log stays the truth) if the folder fails it."""

    def __init__(self, run_path: Path | str) -> None:
        self.run_path = Path(run_path)
        self.log = self.run_path / EVENTS_FILE
        self._fd = _lock(self.run_path / SUMMARY_DIR, block=True)
        self.summary: _Summary | None = None
        self._pending: list[dict[str, Any]] = []  # states waiting for the log's flush
        self._next_commit = 0.0
        if self._fd is None:
            return
        try:
            self.summary = open_summary(self.run_path, writable=True)
            self.summary.catch_up(commit_every=COMMIT_BYTES)
            self.summary.commit()
            try:
                self.summary.offset = self.log.stat().st_size  # a torn line joins the next
            except FileNotFoundError:
                self.summary.offset = 0
        except Exception:  # never the run's problem: the log stays the truth
            self.close()

    @classmethod
    def for_run(cls, run: Any) -> Any:
        path = getattr(run, "path", None)
        if type(run).__name__ == "NullRunDir" or path is None or not Path(path).is_dir():
            return lambda event: None
        return cls(path)

    def __call__(self, event: ev.Event) -> None:
        s = self.summary
        if s is None:
            return
        try:
            line = _json_line(event)
            start = s.offset
            s.cuts.clear()
            if isinstance(event, ev.StepMetrics):
                s.steps(event.first_step, event.losses, event.lr, event.lrs)
            elif isinstance(event, ev.RunStarted):
                s.started(event.start_step)
            elif isinstance(event, ev.EpochEnd):
                s.epoch(event.epoch, event.step, event.train_loss, event.val_loss, event.metrics)
            for cut in s.cuts:
                self._clip(*cut)
            s.moved(event.type, start, line)
            if isinstance(event, ev.TERMINAL):
                self._pending.append(s.meta())
                self.close()
            elif time.monotonic() >= self._next_commit:
                self._pending.append(s.meta())  # a state to commit once the log holds it
                self._commit_flushed()
        except Exception:  # a full disk, a removed folder: no summary from here on (the
            self.close()  # next open catches up from the log); never the run's problem

    def _clip(self, n: int, n_lr: int, n_epochs: int) -> None:
        """After a cut: no state waiting to be committed may claim the cut records; the
        committed one is cut back now (replayed from its offset, the log cuts it again)."""
        s = self.summary
        assert s is not None
        committed = _load_meta(self.run_path)
        for meta in [*self._pending, *([committed] if committed else [])]:
            meta.update(n=min(meta["n"], n), n_lr=min(meta["n_lr"], n_lr),
                        n_epochs=min(meta["n_epochs"], n_epochs))  # fmt: skip
        if committed is not None:
            s.commit(committed)

    def _commit_flushed(self) -> None:
        try:
            size = self.log.stat().st_size
        except FileNotFoundError:
            return
        ready = [m for m in self._pending if m["offset"] <= size]
        self._next_commit = time.monotonic() + COMMIT_EVERY_S
        if ready:
            assert self.summary is not None
            self.summary.commit(ready[-1])
            self._pending = [m for m in self._pending if m["offset"] > size]

    def close(self) -> None:
        """Commit what the log holds and let the folder go (at the run's end)."""
        if self.summary is not None:
            try:
                self._commit_flushed()
            except Exception:
                pass
            self.summary.close()
            self.summary = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


__all__ = ["Curve", "SummaryWriter", "ensure_summary", "history_of", "read_curve"]


# --- as plain lines ------------------------------------------------------------------------


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def history_lines(h: ev.History, max_changes: int = 6) -> list[str]:
    """A few lines for `attach --plain`: steps, epochs, first/min/last loss, lr changes."""
    out = [f"history: {h.last_step:,} steps, {h.n_epochs:,} epochs"]
    if h.last_step:
        mins = np.asarray(h.loss_min, dtype=np.float64)
        finite = ~np.isnan(mins)
        if finite.any():
            i = int(np.nanargmin(mins))
            where = (
                f"step {h.steps[i]:,}"
                if h.per_point == 1
                else (f"steps {max(1, h.steps[i] - h.per_point + 1):,}-{h.steps[i]:,}")
            )
            low = f"min {_g(float(mins[i]))} ({where})"
        else:
            low = "min -"
        last = h.tail_losses[-1] if h.tail_losses else None
        out.append(f"loss: first {_g(h.first_loss)}  {low}  last {_g(last)}")
    if h.lr:
        changes = [f"{_g(v)} (step {s:,})" for s, v in zip(h.lr_steps, h.lr, strict=True)]
        if len(changes) > max_changes:
            skipped = len(changes) - max_changes + 1
            changes = [*changes[: max_changes // 2], f"... {skipped} more ...",
                       *changes[-(max_changes - max_changes // 2 - 1) :]]  # fmt: skip
        out.append("lr: " + " -> ".join(changes))
    if h.epochs and h.val_loss and any(v is not None for v in h.val_loss):
        best = min(v for v in h.val_loss if v is not None)
        out.append(f"val_loss: best {_g(best)}")
    return out


def print_history(h: ev.History, printer: Any) -> ev.Event:
    """Hand a History to a ConsolePrinter-like `printer(event)` / `printer.line(text)`: the
    run line, the summary lines, then the last epoch and the run's state (paused, warning,
    finished...). Returns the last event so given (the History if none)."""
    last: ev.Event = h
    shown = ("epoch", "warning", "paused", "resumed", "finished", "failed")
    started = [e for e in h.events if isinstance(e, ev.RunStarted)]
    for e in started:
        printer(e)
    for line in history_lines(h):
        printer.line(line)
    if h.lr and hasattr(printer, "lr"):
        printer.lr = h.lr[-1]  # the lr the run is at, for the epoch line
    for e in h.events:
        if e.type in shown:
            printer(e)
            last = e
    return last
