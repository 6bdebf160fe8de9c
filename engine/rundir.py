"""The run directory: run.toml (rewritten atomically), events.jsonl (append-only), checkpoints/.

This module is the only reader of run.toml: everything else asks `RunDir.record()` for a
RunRecord (status, liveness, effective status, damage) or, to write, `RunDir.read_meta()`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import tomllib
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from engine.atomic import atomic_write_bytes
from engine.errors import RunDirError
from engine.events import Event, RunStatus, event_from_dict, event_to_json

RUN_FILE = "run.toml"
LOCK_FILE = ".lock"  # flock'ed by the process training the run (the pid inside says who)
EVENTS_FILE = "events.jsonl"
SWEEPS_DIR = "sweeps"  # <runs>/sweeps/<id>/sweep.toml (engine/sweep.py): not a run


def default_runs_dir() -> Path:
    return Path(os.environ.get("TORCHDECK_RUNS") or "runs")


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torchdeck", "torch", "torchvision"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _drop_none(value: Any) -> Any:
    """TOML has no null: leave such keys out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value if v is not None]
    return value


def new_folder(parent: Path, name: str, when: datetime) -> Path:
    """Make `parent/<UTC yyyymmdd-HHMMSS>-<name>` (or `...-N` where that exists) and return
    it. FileExistsError(base name) when 999 such names are taken; other OSErrors as they come."""
    base = f"{when.strftime('%Y%m%d-%H%M%S')}-{_safe(name)}"
    for n in range(1, 1000):
        path = parent / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(base)


class RunDir:
    """One run's folder: `RunDir.create` makes a new one, `RunDir(path)` opens one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.id = self.path.name
        self.meta: dict[str, Any] = {}
        self._events = None
        self._lock: int | None = None

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_ckpt(self) -> Path:
        return self.checkpoints / "best.pt"

    @classmethod
    def create(cls, runs_dir: Path, preset: str, config: dict[str, Any], device: str) -> RunDir:
        """Make a new, uniquely named run folder with run.toml (status running).

        Fails with RunDirError, leaving nothing behind, if the runs folder cannot be written.
        """
        runs_dir = Path(runs_dir)
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunDirError(f"runs folder {runs_dir}: cannot create it: {err.strerror}") from None
        started = utc_now()
        try:
            path = new_folder(runs_dir, preset, started)
        except FileExistsError as err:
            raise RunDirError(f"runs folder {runs_dir}: too many runs named {err}") from None
        except OSError as err:
            raise RunDirError(
                f"runs folder {runs_dir}: cannot write to it: {err.strerror}"
            ) from None
        run = cls(path)
        try:
            run.checkpoints.mkdir()
            run.lock()
            run.meta = {
                "run": {
                    "id": run.id,
                    "preset": preset,
                    "status": "running",
                    "started": started,
                    "device": device,
                    "versions": versions(),
                },
                "config": config,
                "summary": {},
                "changes": [],
            }
            run.claim()
            run.write_meta()
            (path / EVENTS_FILE).touch()
        except OSError as err:
            shutil.rmtree(path, ignore_errors=True)
            raise RunDirError(
                f"runs folder {runs_dir}: cannot write to it: {err.strerror}"
            ) from None
        return run

    # --- run.toml ---------------------------------------------------------------------
    def write_meta(self) -> None:
        from engine.presets import _strip_defaults

        meta = dict(self.meta)
        meta["config"] = _strip_defaults(meta.get("config", {}))
        if not meta.get("changes"):
            meta.pop("changes", None)
        text = tomli_w.dumps(_drop_none(meta)).encode()
        atomic_write_bytes(self.path / RUN_FILE, lambda fh: fh.write(text))

    def read_meta(self) -> dict[str, Any]:
        try:
            with open(self.path / RUN_FILE, "rb") as fh:
                self.meta = tomllib.load(fh)
        except FileNotFoundError:
            raise RunDirError(f"{self.path}: no run.toml (not a run, or a damaged one)") from None
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError, RecursionError) as err:
            raise RunDirError(f"{self.path / RUN_FILE}: unreadable: {err}") from None
        if not isinstance(self.meta.get("run"), dict):
            raise RunDirError(f"{self.path / RUN_FILE}: damaged: no [run] table")
        return self.meta

    def lock(self) -> None:
        """Hold the run's lock (until `close`); RunDirError naming the holder if another
        process (or another trainer here) holds it."""
        import fcntl

        if self._lock is not None:
            return
        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"{self.path}: cannot write to it: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(
                f"run {self.id} is in use by {holder}: attach to it, or wait until it ends"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __del__(self) -> None:  # a RunDir dropped before its run ended frees the lock
        if getattr(self, "_lock", None) is not None:
            try:
                self.unlock()
            except Exception:  # interpreter shutdown
                pass

    def clean_leftovers(self) -> None:
        """Temp files of writes cut short by a crash (.run.toml.PID.tmp, checkpoints)."""
        for folder in (self.path, self.checkpoints):
            for leftover in folder.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)

    def claim(self) -> None:
        """Record this process as the one training the run, so others can tell it is alive."""
        self.meta["run"]["pid"] = os.getpid()
        self.meta["run"]["host"] = socket.gethostname()

    def update(self, status: str | None = None, **sections: Any) -> None:
        if status is not None:
            self.meta["run"]["status"] = status
            if status not in ("running", "paused"):
                self.meta["run"]["ended"] = utc_now()
        for key, value in sections.items():
            self.meta[key] = value
        self.write_meta()

    def mark_failed(self, reason: str) -> None:
        """Status failed with its reason, for a run whose own process could not say so."""
        meta = self.read_meta()
        summary = meta.get("summary") if isinstance(meta.get("summary"), dict) else {}
        self.update("failed", summary={**summary, "reason": reason})

    # --- events.jsonl -----------------------------------------------------------------
    def append_event(self, event: Event) -> None:
        try:
            if self._events is None:
                self._events = open(self.path / EVENTS_FILE, "a", encoding="utf-8")
            self._events.write(event_to_json(event) + "\n")
        except OSError as err:
            raise self._named(err) from None

    def flush_events(self) -> None:
        if self._events is not None:
            try:
                self._events.flush()
            except OSError as err:
                raise self._named(err) from None

    def drop_events(self) -> None:
        """Close the log, giving up what could not be written (a full disk)."""
        if self._events is not None:
            try:
                self._events.close()
            except OSError:
                pass
            self._events = None

    def _named(self, err: OSError) -> OSError:
        return OSError(err.errno, err.strerror or str(err), str(self.path / EVENTS_FILE))

    def close(self) -> None:
        if self._events is not None:
            events, self._events = self._events, None
            try:
                events.close()
            except OSError as err:
                raise self._named(err) from None
        self.unlock()

    def record(self, check_checkpoints: bool = True) -> RunRecord:
        """The run as its folder records it; never raises (a damaged folder says why)."""
        return read_record(self.path, check_checkpoints)

    def read_events(self) -> list[Event]:
        """Every complete event; a torn last line (a writer killed mid-line) is ignored."""
        return EventTail(self.path / EVENTS_FILE).read_new()


class LineTail:
    """Incremental reader of an append-only JSON-lines file (events.jsonl, control.jsonl):
    complete lines only; a torn last line waits for its end, a bad line is skipped."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._partial = b""

    @classmethod
    def at_end(cls, path: Path) -> LineTail:
        """A tail that reads only what is appended from now on."""
        try:
            return cls(path, path.stat().st_size)
        except FileNotFoundError:
            return cls(path)

    @property
    def behind(self) -> bool:
        """Whether the file holds bytes not read yet."""
        try:
            return self.path.stat().st_size > self.offset
        except FileNotFoundError:
            return False

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        items = []
        for line in lines:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                items.append(item)
        return items


class EventTail(LineTail):
    """events.jsonl, line by line, as events."""

    def read_new(self) -> list[Event]:  # type: ignore[override]
        events = []
        for item in super().read_new():
            try:
                events.append(event_from_dict(item))
            except (ValueError, KeyError, TypeError):
                continue
        return events


def find_run(ref: str, runs_dir: Path | None = None) -> RunDir:
    """A run by path, by id, or by a unique prefix of its id."""
    as_path = Path(ref)
    if as_path.is_dir() and (os.sep in ref or (as_path / RUN_FILE).exists()):
        return RunDir(as_path)
    runs_dir = Path(runs_dir or default_runs_dir())
    if (runs_dir / ref).is_dir():
        return RunDir(runs_dir / ref)
    matches = sorted(p for p in runs_dir.glob(f"{ref}*") if p.is_dir()) if runs_dir.is_dir() else []
    if len(matches) == 1:
        return RunDir(matches[0])
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches[:5])
        raise RunDirError(f"run {ref!r} is ambiguous in {runs_dir}: {names}")
    raise RunDirError(f"no run {ref!r} in {runs_dir}")


def list_runs(runs_dir: Path | None = None) -> list[RunDir]:
    runs_dir = Path(runs_dir or default_runs_dir())
    if not runs_dir.is_dir():
        return []
    return [
        RunDir(p) for p in sorted(runs_dir.iterdir()) if p.is_dir() and p.name != SWEEPS_DIR
    ]


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists here and is not a zombie."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pid_alive_here(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if isinstance(pid, bool) or not 0 < pid < 2**31:  # a damaged pid is no process
        return False
    return process_alive(pid)


def checkpoint_problem(checkpoints: Path) -> str:
    """'' or why a checkpoint is unreadable. torch.save writes zip archives: a truncated one
    has no end-of-central-directory record, which zipfile sees without loading torch."""
    for name in ("last.pt", "best.pt"):
        path = checkpoints / name
        if path.exists() and not zipfile.is_zipfile(path):
            return f"checkpoints/{name} is truncated or not a checkpoint"
    return ""


@dataclass(frozen=True)
class RunRecord:
    """What a run folder says about its run, read once: run.toml, whether the process that
    trains it is alive, and what is damaged. `RunDir.record()` never raises."""

    id: str
    path: Path
    meta: dict[str, Any]
    status: RunStatus | None  # as recorded; None when run.toml is missing or unreadable
    process_alive: bool  # the recorded pid is a live process on this host
    problem: str = ""  # '' or why the folder is damaged

    @property
    def info(self) -> dict[str, Any]:
        info = self.meta.get("run", {})
        return info if isinstance(info, dict) else {}

    @property
    def summary(self) -> dict[str, Any]:
        summary = self.meta.get("summary", {})
        return summary if isinstance(summary, dict) else {}

    @property
    def config(self) -> dict[str, Any]:
        config = self.meta.get("config", {})
        return config if isinstance(config, dict) else {}

    @property
    def changes(self) -> list[dict[str, Any]]:
        changes = self.meta.get("changes", [])
        return [c for c in changes if isinstance(c, dict)] if isinstance(changes, list) else []

    @property
    def damaged(self) -> bool:
        return bool(self.problem)

    @property
    def why_damaged(self) -> str:
        """A few words: 'no run.toml', 'unreadable run.toml', 'unreadable checkpoint'."""
        if self.problem.startswith("checkpoints/"):
            return "unreadable checkpoint"
        if self.problem.startswith("run.toml"):
            return "unreadable run.toml"
        return self.problem

    @property
    def elsewhere(self) -> bool:
        return self.info.get("host") != socket.gethostname()

    @property
    def live(self) -> bool:
        """Recorded as running or paused, and its process is alive here."""
        return self.status is not None and self.status.live and self.process_alive

    @property
    def killed(self) -> bool:
        """Recorded as running or paused on this host, but its process is gone."""
        return (
            self.status is not None
            and self.status.live
            and not self.process_alive
            and not self.elsewhere
        )

    @property
    def effective(self) -> str:
        """One word: the recorded status, 'killed' for a live-looking run whose process is
        gone, 'damaged' for a folder that cannot be trusted."""
        if self.damaged:
            return "damaged"
        if self.killed:
            return "killed"
        return str(self.status)

    @property
    def label(self) -> str:
        """The status as listings show it: 'running (alive, pid 12)', 'killed',
        'running (elsewhere)', 'damaged (no run.toml)', 'finished'."""
        if self.damaged:
            return f"damaged ({self.why_damaged})"
        if self.live:
            return f"{self.status} (alive, pid {self.info.get('pid')})"
        if self.status is not None and self.status.live and self.elsewhere:
            return f"{self.status} (elsewhere)"
        return self.effective

    @property
    def resumable(self) -> bool:
        return not self.damaged and self.effective in ("stopped", "killed", "diverged", "failed")

    @property
    def lr(self) -> float | None:
        """The learning rate the run ended with (live changes included)."""
        optim = self.config.get("optim", {})
        lr = optim.get("lr") if isinstance(optim, dict) else None
        for change in self.changes:
            if change.get("key") == "optim.lr":
                lr = change.get("new", lr)
        return float(lr) if isinstance(lr, (int, float)) else None

    @property
    def pid(self) -> int | None:
        """The recorded pid of the training process (rank 0 or the launcher)."""
        pid = self.info.get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) else None

    @property
    def device(self) -> str:
        """The device it trains on as recorded ('cpu', 'cuda:0', ...; '' if unknown)."""
        return str(self.info.get("device", ""))

    @property
    def duration_s(self) -> float | None:
        if isinstance(self.summary.get("duration_s"), (int, float)):
            return float(self.summary["duration_s"])
        started, ended = self.info.get("started"), self.info.get("ended")
        if isinstance(started, datetime) and isinstance(ended, datetime):
            return max(0.0, ended.timestamp() - started.timestamp())
        return None


def read_record(path: Path, check_checkpoints: bool = True) -> RunRecord:
    run_id = path.name
    try:
        with open(path / RUN_FILE, "rb") as fh:
            meta = tomllib.load(fh)
    except FileNotFoundError:
        return RunRecord(run_id, path, {}, None, False, "no run.toml")
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError, RecursionError) as err:
        return RunRecord(run_id, path, {}, None, False, f"run.toml unreadable: {err}")
    info = meta.get("run")
    if not isinstance(info, dict):
        return RunRecord(run_id, path, meta, None, False, "run.toml: no [run] table")
    try:
        status = RunStatus(info.get("status"))
    except (ValueError, TypeError):
        return RunRecord(
            run_id, path, meta, None, False, f"run.toml: unknown status {info.get('status')!r}"
        )
    problem = checkpoint_problem(path / "checkpoints") if check_checkpoints else ""
    return RunRecord(run_id, path, meta, status, _pid_alive_here(info), problem)
