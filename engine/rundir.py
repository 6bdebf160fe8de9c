"""The run directory: run.toml (rewritten atomically), events.jsonl (append-only), checkpoints/."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from engine.atomic import atomic_write_bytes
from engine.errors import RunDirError
from engine.events import Event, event_from_dict, event_to_json

RUN_FILE = "run.toml"
EVENTS_FILE = "events.jsonl"


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


class RunDir:
    """One run's folder: `RunDir.create` makes a new one, `RunDir(path)` opens one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.id = self.path.name
        self.meta: dict[str, Any] = {}
        self._events = None

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
        base = f"{started.strftime('%Y%m%d-%H%M%S')}-{_safe(preset)}"
        for n in range(1, 1000):
            path = runs_dir / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as err:
                raise RunDirError(
                    f"runs folder {runs_dir}: cannot write to it: {err.strerror}"
                ) from None
        else:
            raise RunDirError(f"runs folder {runs_dir}: too many runs named {base}")
        run = cls(path)
        try:
            run.checkpoints.mkdir()
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
        except (tomllib.TOMLDecodeError, OSError) as err:
            raise RunDirError(f"{self.path / RUN_FILE}: unreadable: {err}") from None
        return self.meta

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

    # --- events.jsonl -----------------------------------------------------------------
    def append_event(self, event: Event) -> None:
        if self._events is None:
            self._events = open(self.path / EVENTS_FILE, "a", encoding="utf-8")
        self._events.write(event_to_json(event) + "\n")

    def flush_events(self) -> None:
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    def read_events(self) -> list[Event]:
        """Every complete event; a torn last line (a writer killed mid-line) is ignored."""
        return EventTail(self.path / EVENTS_FILE).read_new()


class EventTail:
    """Incremental reader of events.jsonl: complete lines only, torn or bad lines skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""

    def read_new(self) -> list[Event]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                events.append(event_from_dict(json.loads(line)))
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
    return [RunDir(p) for p in sorted(runs_dir.iterdir()) if p.is_dir()]


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists here and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def run_is_alive(meta: dict[str, Any]) -> bool:
    """Whether the process recorded in a run's run.toml is alive on this host."""
    info = meta.get("run", {})
    if info.get("host") != socket.gethostname() or "pid" not in info:
        return False
    return process_alive(int(info["pid"]))
