"""Sweeps: one run per combination of a grid of config values, and the queue they wait in.

A sweep lives in `<runs>/sweeps/<id>/sweep.toml`: the preset, the base config (preset plus
--set), the grid, and the combinations in the order they run, each with its status
(waiting | running | done | cancelled) and, once started, its run id. The file is written
atomically under a lock (`<id>/.lock`), so the runner and `torchdeck queue` can both change
it. Each combination is a normal run folder made through engine.jobs, so `runs`, `attach`
and `resume` work on it.

The runner (`run_sweep`, in this process or detached by engine.procs.sweeper) re-reads
sweep.toml before starting each next run, and on a restart finishes what is left: a
combination whose run is still alive is followed, one whose run was killed or stopped is
resumed (ResumeJob), a finished one is never redone.

Everything here takes and returns plain data and prints nothing; torch-free.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import itertools
import json
import os
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from engine.atomic import atomic_write_bytes
from engine.errors import ConfigError, TorchdeckError
from engine.rundir import SWEEPS_DIR, RunDir, default_runs_dir, process_alive, utc_now

SWEEP_FILE = "sweep.toml"
LOG_FILE = "sweeper.log"
STATUSES = ("waiting", "running", "done", "cancelled")
METRICS = {"final_loss": False, "best_val_loss": False, "test_accuracy": True}  # True: higher wins


class SweepError(TorchdeckError):
    """A sweep cannot be found, read or changed as asked."""


# --- the grid ----------------------------------------------------------------------------
def _split_top(text: str) -> list[str]:
    """'a,[1,2],"x,y"' -> ['a', '[1,2]', '"x,y"']: commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def parse_grid(option: str) -> tuple[str, list[Any]]:
    """'optim.lr=0.001,0.002' -> ('optim.lr', [0.001, 0.002]); values are TOML like --set
    (bare words become strings)."""
    from engine.presets import parse_value

    key, sep, text = option.partition("=")
    key = key.strip()
    if not sep or not key or not text.strip():
        raise ConfigError(f"--grid {option}: expected key=v1,v2,..., e.g. --grid optim.lr=0.01,0.1")
    values = []
    for part in _split_top(text):
        if not part:
            raise ConfigError(f"--grid {option}: an empty value")
        values.append(parse_value(part, f"--grid {key}"))
    return key, values


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value)


def _reword(err: ConfigError, label: str) -> ConfigError:
    """apply_overrides names a `--set k=v`: name the --grid value instead."""
    text = str(err)
    if text.startswith("--set ") and ": " in text:
        text = text.split(": ", 1)[1]
    return ConfigError(f"{label}: {text}")


@dataclass
class SweepPlan:
    """A sweep as asked for, validated: the base config and every combination."""

    preset: str
    sets: list[str]
    grid: list[tuple[str, list[Any]]]
    config: dict[str, Any]
    combos: list[dict[str, Any]]  # key -> value, in run order
    runs_dir: Path

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.config, self.grid)


def fingerprint(config: dict[str, Any], grid: Sequence[Sequence[Any]]) -> str:
    text = json.dumps([config, [[k, list(v)] for k, v in grid]], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_sweep(
    preset: str,
    grid_options: Sequence[str],
    sets: Sequence[str] = (),
    preset_dirs: Sequence[str] = (),
    runs_dir: str | Path | None = None,
) -> SweepPlan:
    """Validate a sweep up front: every grid value and every combination makes a valid
    config, or one ConfigError names the option and the problem. Writes nothing."""
    from engine.presets import apply_overrides, resolve_config

    if not grid_options:
        raise ConfigError("sweep: give at least one --grid key=v1,v2,...")
    config = resolve_config(preset, list(sets), preset_dirs)
    grid: list[tuple[str, list[Any]]] = []
    for option in grid_options:
        key, values = parse_grid(option)
        if any(key == k for k, _ in grid):
            raise ConfigError(f"--grid {key}: given twice")
        for value in values:
            try:
                apply_overrides(config, {key: value})
            except ConfigError as err:
                raise _reword(err, f"--grid {key}={_show(value)}") from None
        grid.append((key, values))
    combos = [dict(zip([k for k, _ in grid], vals, strict=True))
              for vals in itertools.product(*[v for _, v in grid])]  # fmt: skip
    for combo in combos:
        try:
            apply_overrides(config, combo)
        except ConfigError as err:
            shown = ", ".join(f"{k}={_show(v)}" for k, v in combo.items())
            raise _reword(err, f"--grid combination {shown}") from None
    root = Path(runs_dir) if runs_dir else default_runs_dir()
    return SweepPlan(preset, list(sets), grid, config, combos, root.absolute())


def plan_config_sweep(
    config: dict[str, Any],
    grid: Sequence[tuple[str, Sequence[Any]]],
    runs_dir: str | Path | None = None,
    sets: Sequence[str] = (),
) -> SweepPlan:
    """plan_sweep for a resolved config and a grid of values (the app's form: a list of
    values in a field); `sets` only records the edits the config already holds. Every
    combination is checked; ConfigError names the key and value. Writes nothing."""
    from engine.presets import apply_overrides, resolve_config

    config = resolve_config(config)
    if not grid:
        raise ConfigError("sweep: no key has more than one value")
    keys = [k for k, _ in grid]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"sweep: a key is given twice ({', '.join(keys)})")
    combos = [dict(zip(keys, vals, strict=True))
              for vals in itertools.product(*[list(v) for _, v in grid])]  # fmt: skip
    for combo in combos:
        try:
            apply_overrides(config, combo)
        except ConfigError as err:
            shown = ", ".join(f"{k}={_show(v)}" for k, v in combo.items())
            raise _reword(err, f"sweep {shown}") from None
    root = Path(runs_dir) if runs_dir else default_runs_dir()
    return SweepPlan(
        str(config["name"]),
        list(sets),
        [(k, list(v)) for k, v in grid],
        config,
        combos,
        root.absolute(),
    )


# --- sweep.toml --------------------------------------------------------------------------
@dataclass
class Sweep:
    """A sweep as its folder records it (plain data)."""

    id: str
    path: Path
    meta: dict[str, Any]
    combos: list[dict[str, Any]] = field(default_factory=list)

    @property
    def info(self) -> dict[str, Any]:
        return self.meta.get("sweep", {})

    @property
    def runs_dir(self) -> Path:
        return Path(self.info.get("runs_dir") or self.path.parent.parent)

    @property
    def grid(self) -> list[tuple[str, list[Any]]]:
        return [(g["key"], list(g["values"])) for g in self.meta.get("grid", [])]

    @property
    def keys(self) -> list[str]:
        """The config keys that vary (more than one value in the grid)."""
        return [k for k, v in self.grid if len(v) > 1] or [k for k, _ in self.grid]

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config", {})

    @property
    def runner_alive(self) -> bool:
        info = self.info
        pid = info.get("runner_pid")
        return (
            isinstance(pid, int)
            and info.get("runner_host") == socket.gethostname()
            and (process_alive(pid))
        )

    @property
    def unfinished(self) -> bool:
        return any(c["status"] in ("waiting", "running") for c in self.combos)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for c in self.combos:
            out[c["status"]] = out.get(c["status"], 0) + 1
        return out

    @property
    def state(self) -> str:
        """running (a runner is at it), finished, cancelled, or stopped (work left, no runner)."""
        if self.runner_alive:
            return "running"
        if not self.unfinished:
            return (
                "cancelled"
                if all(c["status"] == "cancelled" for c in self.combos)
                else ("finished")
            )
        return "stopped"

    def combo(self, n: int) -> dict[str, Any]:
        for c in self.combos:
            if c["n"] == n:
                return c
        raise SweepError(f"sweep {self.id} has no combination {n} (1..{len(self.combos)})")


def sweeps_dir(runs_dir: str | Path | None = None) -> Path:
    return Path(runs_dir or default_runs_dir()) / SWEEPS_DIR


def read_sweep(path: Path) -> Sweep:
    try:
        with open(Path(path) / SWEEP_FILE, "rb") as fh:
            meta = tomllib.load(fh)
    except FileNotFoundError:
        raise SweepError(f"{path}: no {SWEEP_FILE} (not a sweep)") from None
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as err:
        raise SweepError(f"{Path(path) / SWEEP_FILE}: unreadable: {err}") from None
    combos = [dict(c) for c in meta.get("combos", []) if isinstance(c, dict)]
    return Sweep(Path(path).name, Path(path), meta, combos)


def write_sweep(sweep: Sweep) -> None:
    from engine.presets import _strip_defaults
    from engine.rundir import _drop_none

    meta = dict(sweep.meta)
    meta["config"] = _strip_defaults(meta.get("config", {}))
    meta["combos"] = sweep.combos
    text = tomli_w.dumps(_drop_none(meta)).encode()
    atomic_write_bytes(sweep.path / SWEEP_FILE, lambda fh: fh.write(text))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[Sweep]:
    """Read the sweep under its lock; what the block changes is written back atomically."""
    fd = os.open(Path(path) / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        sweep = read_sweep(path)
        before = copy.deepcopy((sweep.meta, sweep.combos))
        yield sweep
        if (sweep.meta, sweep.combos) != before:
            write_sweep(sweep)
    finally:
        os.close(fd)  # releases the lock


def create_sweep(plan: SweepPlan) -> Sweep:
    """Write a new sweep folder for a plan (all combinations waiting)."""
    from engine.rundir import new_folder

    root = plan.runs_dir / SWEEPS_DIR
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SweepError(
            f"runs folder {plan.runs_dir}: cannot create {root}: {err.strerror}"
        ) from None
    created = utc_now()
    try:
        path = new_folder(root, plan.config["name"], created)
    except FileExistsError as err:
        raise SweepError(f"{root}: too many sweeps named {err}") from None
    except OSError as err:
        raise SweepError(f"{root}: cannot write to it: {err.strerror}") from None
    meta = {
        "sweep": {
            "id": path.name,
            "preset": plan.preset,
            "created": created,
            "runs_dir": str(plan.runs_dir),
            "fingerprint": plan.fingerprint,
            "sets": plan.sets,
        },
        "grid": [{"key": k, "values": v} for k, v in plan.grid],
        "config": plan.config,
    }
    combos = [{"n": i, "values": c, "status": "waiting"} for i, c in enumerate(plan.combos, 1)]
    sweep = Sweep(path.name, path, meta, combos)
    write_sweep(sweep)
    return read_sweep(path)


def list_sweeps(runs_dir: str | Path | None = None) -> list[Sweep]:
    root = sweeps_dir(runs_dir)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if (path / SWEEP_FILE).is_file():
            with contextlib.suppress(SweepError):
                out.append(read_sweep(path))
    return out


def find_sweep(ref: str, runs_dir: str | Path | None = None) -> Sweep:
    """A sweep by id, unique prefix of its id, or folder."""
    as_path = Path(ref)
    if (as_path / SWEEP_FILE).is_file():
        return read_sweep(as_path)
    root = sweeps_dir(runs_dir)
    matches = [s for s in list_sweeps(runs_dir) if s.id == ref] or [
        s for s in list_sweeps(runs_dir) if s.id.startswith(ref)
    ]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(s.id for s in matches[:5])
        raise SweepError(f"sweep {ref!r} is ambiguous in {root}: {names}")
    raise SweepError(f"no sweep {ref!r} in {root}")


def find_unfinished_identical(plan: SweepPlan) -> Sweep | None:
    """The newest sweep with the same base config and grid that still has work left."""
    same = [
        s
        for s in list_sweeps(plan.runs_dir)
        if s.info.get("fingerprint") == plan.fingerprint and s.unfinished
    ]
    return same[-1] if same else None


def combo_config(sweep: Sweep, combo: dict[str, Any]) -> dict[str, Any]:
    from engine.presets import apply_overrides, resolve_config

    return apply_overrides(resolve_config(sweep.config), combo["values"])


# --- the queue ---------------------------------------------------------------------------
def parse_ref(ref: str) -> tuple[str, int | None]:
    """'SWEEP:N' -> (SWEEP, N); 'SWEEP' -> (SWEEP, None)."""
    sweep, sep, n = ref.rpartition(":")
    if not sep:
        return ref, None
    if not n.isdigit() or not sweep:
        raise SweepError(f"{ref}: expected SWEEP:N (N the combination's number)")
    return sweep, int(n)


def queue_entries(runs_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Waiting combinations of every sweep, in the order each sweep will start them."""
    out = []
    for sweep in list_sweeps(runs_dir):
        waiting = [c for c in sweep.combos if c["status"] == "waiting"]
        for pos, c in enumerate(waiting, 1):
            out.append({
                "ref": f"{sweep.id}:{c['n']}",
                "sweep": sweep.id,
                "n": c["n"],
                "position": pos,
                "values": dict(c["values"]),
                "sweep_state": sweep.state,
            })  # fmt: skip
    return out


def move(ref: str, where: str, runs_dir: str | Path | None = None) -> list[int]:
    """Move a waiting combination up, down or first among the waiting ones; returns the new
    waiting order (combination numbers)."""
    sweep_ref, n = parse_ref(ref)
    if n is None:
        raise SweepError(f"queue move {ref}: name a combination, SWEEP:N")
    if where not in ("up", "down", "first", "last"):
        raise SweepError(f"queue move {ref} {where}: expected up, down, first or last")
    found = find_sweep(sweep_ref, runs_dir)
    with locked(found.path) as sweep:
        combo = sweep.combo(n)
        if combo["status"] != "waiting":
            raise SweepError(f"{sweep.id}:{n} is {combo['status']}, not waiting")
        waiting = [c for c in sweep.combos if c["status"] == "waiting"]
        i = waiting.index(combo)
        waiting.pop(i)
        j = {"up": max(0, i - 1), "down": min(len(waiting), i + 1), "first": 0}.get(
            where, len(waiting)
        )
        waiting.insert(j, combo)
        others = iter(waiting)
        sweep.combos = [next(others) if c["status"] == "waiting" else c for c in sweep.combos]
        return [c["n"] for c in waiting]


def cancel(ref: str, runs_dir: str | Path | None = None) -> list[str]:
    """Cancel one combination (SWEEP:N) or every unfinished one of a sweep (SWEEP); a running
    one is asked to stop (checkpoint, status stopped). Returns the refs cancelled."""
    from engine.handle import send_command

    sweep_ref, n = parse_ref(ref)
    found = find_sweep(sweep_ref, runs_dir)
    done = []
    with locked(found.path) as sweep:
        targets = [sweep.combo(n)] if n is not None else sweep.combos
        for combo in targets:
            if combo["status"] not in ("waiting", "running"):
                if n is not None:
                    raise SweepError(f"{sweep.id}:{n} is {combo['status']}: nothing to cancel")
                continue
            if combo["status"] == "running" and combo.get("run"):
                run_dir = sweep.runs_dir / combo["run"]
                if RunDir(run_dir).record(check_checkpoints=False).live:
                    send_command(run_dir, "stop")
            combo["status"] = "cancelled"
            done.append(f"{sweep.id}:{combo['n']}")
    return done


# --- the comparison table ----------------------------------------------------------------
def combo_status(sweep: Sweep, combo: dict[str, Any]) -> str:
    """waiting / cancelled, or what the combination's run says (running, finished, killed...)."""
    run = combo.get("run")
    if not run:
        return "could not start" if combo.get("error") else combo["status"]
    record = RunDir(sweep.runs_dir / run).record(check_checkpoints=False)
    word = "running" if record.live else record.effective
    return f"cancelled ({word})" if combo["status"] == "cancelled" else word


def comparison(sweep: Sweep, sort: str | None = None) -> tuple[list[str], list[list[Any]], str]:
    """The sweep's table as plain data: (header, rows, the sort key used). One row per
    combination: n, each varying key, status, run id, final_loss, best_val_loss,
    test_accuracy (the metric columns some run has). Sorted by `sort` (a metric or 'n';
    default: test_accuracy, else best_val_loss, else final_loss); missing values last."""
    keys = sweep.keys
    rows, summaries = [], []
    for combo in sweep.combos:
        summary = {}
        if combo.get("run"):
            summary = RunDir(sweep.runs_dir / combo["run"]).record(check_checkpoints=False).summary
        summaries.append(summary)
        rows.append([
            combo["n"],
            *[combo["values"].get(k) for k in keys],
            combo_status(sweep, combo),
            combo.get("run", "-"),
            *[summary.get(m) for m in METRICS],
        ])  # fmt: skip
    metrics = [m for m in METRICS if m == "final_loss" or any(m in s for s in summaries)]
    header = ["n", *keys, "status", "run", *METRICS]
    keep = [i for i, h in enumerate(header) if h not in METRICS or h in metrics]
    if sort is None:
        sort = next((m for m in ("test_accuracy", "best_val_loss") if m in metrics), "final_loss")
    if sort != "n" and sort not in METRICS:
        raise SweepError(f"--sort {sort}: expected n, {', '.join(METRICS)}")
    if sort != "n":
        col = header.index(sort)
        sign = -1 if METRICS[sort] else 1

        def order(row: list[Any]) -> tuple[int, float]:
            value = row[col]
            ok = isinstance(value, (int, float)) and value == value
            return (0, sign * value) if ok else (1, 0.0)

        rows.sort(key=order)
    return [header[i] for i in keep], [[r[i] for i in keep] for r in rows], sort


@dataclass(frozen=True)
class SweepRunView:
    """One combination of a sweep as a viewer shows it (plain values)."""

    n: int
    values: dict[str, Any]
    status: str  # combo_status: waiting, running, finished, killed, cancelled (…), …
    run: str  # run id, '' before it started
    run_path: str  # '' before it started
    metrics: dict[str, float]  # final_loss, best_val_loss, test_accuracy: those it has

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass(frozen=True)
class SweepView:
    """A sweep read once for a viewer (the app's runs screen): plain values only."""

    id: str
    path: str
    preset: str
    created: str
    state: str  # running, finished, cancelled, stopped
    counts: dict[str, int]
    grid: list[tuple[str, list[Any]]]
    keys: list[str]  # the config keys that vary
    runs: list[SweepRunView]  # in combination order
    metrics: list[str]  # the metric columns some run has (final_loss always)

    @property
    def live(self) -> bool:
        return self.state == "running" or any(r.running for r in self.runs)

    @property
    def default_sort(self) -> str:
        return next(
            (m for m in ("test_accuracy", "best_val_loss") if m in self.metrics), "final_loss"
        )

    def sorted_runs(self, metric: str) -> list[SweepRunView]:
        """Best first by `metric` (higher wins for test_accuracy); missing values last, in
        combination order; 'n': combination order."""
        if metric not in METRICS:
            return list(self.runs)
        sign = -1 if METRICS[metric] else 1

        def order(row: SweepRunView) -> tuple[int, float, int]:
            value = row.metrics.get(metric)
            ok = isinstance(value, (int, float)) and value == value
            return (0, sign * value, row.n) if ok else (1, 0.0, row.n)

        return sorted(self.runs, key=order)


def view_sweep(path: str | Path) -> SweepView:
    """Read a sweep and its runs' run.toml files once (SweepError if unreadable)."""
    sweep = read_sweep(Path(path))
    rows = []
    for combo in sweep.combos:
        run = combo.get("run") or ""
        metrics: dict[str, float] = {}
        if run:
            summary = RunDir(sweep.runs_dir / run).record(check_checkpoints=False).summary
            metrics = {m: float(summary[m]) for m in METRICS
                       if isinstance(summary.get(m), (int, float))}  # fmt: skip
        rows.append(SweepRunView(int(combo["n"]), dict(combo.get("values", {})),
                                 combo_status(sweep, combo), run,
                                 str(sweep.runs_dir / run) if run else "", metrics))  # fmt: skip
    metrics = [m for m in METRICS if m == "final_loss" or any(m in r.metrics for r in rows)]
    created = sweep.info.get("created")
    return SweepView(
        id=sweep.id, path=str(sweep.path), preset=str(sweep.info.get("preset", "-")),
        created=created.strftime("%Y-%m-%d %H:%M") if hasattr(created, "strftime")
        else str(created or "-"),
        state=sweep.state, counts=sweep.counts(), grid=sweep.grid, keys=sweep.keys,
        runs=rows, metrics=metrics,
    )  # fmt: skip


def view_sweeps(runs_dir: str | Path | None = None) -> list[SweepView]:
    """Every readable sweep of a runs folder, as views (newest last)."""
    out = []
    for sweep in list_sweeps(runs_dir):
        with contextlib.suppress(SweepError):
            out.append(view_sweep(sweep.path))
    return out


def show_value(value: Any) -> str:
    """A grid value as the sweep's tables write it (0.001, adam, [0.9, 0.99])."""
    return _show(value)


# --- the runner --------------------------------------------------------------------------
def claim_runner(path: Path) -> None:
    """Record this process as the sweep's runner; SweepError if another one is alive."""
    with locked(path) as sweep:
        if sweep.runner_alive and sweep.info.get("runner_pid") != os.getpid():
            pid = sweep.info.get("runner_pid")
            raise SweepError(f"sweep {sweep.id} is already running (pid {pid})")
        sweep.meta["sweep"]["runner_pid"] = os.getpid()
        sweep.meta["sweep"]["runner_host"] = socket.gethostname()


def release_runner(path: Path) -> None:
    with locked(path) as sweep:
        if sweep.info.get("runner_pid") == os.getpid():
            sweep.meta["sweep"].pop("runner_pid", None)
            sweep.meta["sweep"].pop("runner_host", None)


def _devices(config: dict[str, Any], parallel: int) -> list[str | None]:
    """One device per slot: on a machine with several GPUs (device auto or cuda) slot i
    trains on cuda:i mod count; otherwise the config's own device for every slot."""
    if parallel > 1 and config["train"]["device"] in ("auto", "cuda"):
        from engine.devices import available_devices

        gpus = [d for d in available_devices() if d.startswith("cuda")]
        if len(gpus) > 1:
            return [gpus[i % len(gpus)] for i in range(parallel)]
    return [None] * parallel


def cpu_count() -> int:
    """The CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_cap(
    config: dict[str, Any],
    parallel: int,
    devices: Sequence[str | None],
    grid_keys: Sequence[str] = (),
    cpus: int | None = None,
    on_cpu: bool | None = None,
) -> int | None:
    """train.threads for each run of a sweep that trains `parallel` runs at once on the CPU:
    max(1, cpus // parallel), so N runs do not each start a thread per core and fight over
    them. None (leave it alone) with one run at a time, on GPUs, or where the user chose
    threads (in the config or the grid)."""
    if parallel <= 1 or any(devices) or "train.threads" in grid_keys:
        return None
    if config["train"].get("threads"):
        return None
    if on_cpu is None:
        device = config["train"]["device"]
        if device == "auto":
            from engine.devices import available_devices

            on_cpu = not any(d != "cpu" for d in available_devices())
        else:
            on_cpu = device == "cpu"
    if not on_cpu:
        return None
    return max(1, (cpus or cpu_count()) // parallel)


@dataclass
class _Slot:
    n: int
    run_id: str
    pid: int | None
    index: int  # which of the `parallel` places (and device) it holds


Notify = Callable[[dict[str, Any]], None]


def run_sweep(
    path: str | Path,
    parallel: int = 1,
    notify: Notify | None = None,
    stop: threading.Event | None = None,
    poll_s: float = 0.3,
) -> Sweep:
    """Run a sweep's combinations until none is left (or `stop` is set: the running runs
    are stopped with a checkpoint and stay `running` in sweep.toml, so the next runner
    resumes them). Each run is a detached worker (engine.jobs.start_detached). `notify`
    gets plain dicts: {"event": "started"|"resumed"|"following"|"ended"|"failed_to_start",
    "n", "run", "status", "message"}."""
    path = Path(path)
    notify = notify or (lambda _: None)
    stop = stop or threading.Event()
    if parallel < 1:
        raise SweepError(f"--parallel {parallel}: expected 1 or more")
    claim_runner(path)
    slots: dict[int, _Slot] = {}
    try:
        first = read_sweep(path)
        devices = _devices(first.config, parallel)
        threads = threads_cap(first.config, parallel, devices, [k for k, _ in first.grid])
        if threads is not None:
            notify({"event": "threads", "message": f"{parallel} runs at once on the CPU: "
                    f"train.threads={threads} each ({cpu_count()} CPUs)"})  # fmt: skip
        free = list(range(parallel))
        while True:
            with locked(path) as sweep:
                # runs that ended
                for n, slot in list(slots.items()):
                    record = RunDir(sweep.runs_dir / slot.run_id).record(check_checkpoints=False)
                    if process_alive(slot.pid) if slot.pid else record.live:
                        continue
                    combo = sweep.combo(n)
                    if combo["status"] == "running":
                        combo["status"] = "done"
                    del slots[n]
                    free.append(slot.index)
                    notify({"event": "ended", "n": n, "run": slot.run_id,
                            "status": record.effective})  # fmt: skip
                if stop.is_set():
                    break
                # start what comes next
                for combo in sweep.combos:
                    if len(slots) >= parallel:
                        break
                    if combo["n"] in slots or combo["status"] not in ("waiting", "running"):
                        continue
                    i = min(free)
                    slot = _start(sweep, combo, i, devices[i], notify, threads)
                    if slot is not None:
                        slots[combo["n"]] = slot
                        free.remove(i)
                if not slots and not any(c["status"] == "waiting" for c in sweep.combos):
                    break
            stop.wait(poll_s)
        if stop.is_set():
            _stop_all(path, slots, notify)
    finally:
        release_runner(path)
    return read_sweep(path)


def start_sweep(path: str | Path, parallel: int = 1) -> int:
    """Run a sweep in a runner process of its own session (engine.procs.sweeper), which
    outlives the caller; returns its pid once it has claimed the sweep."""
    from engine.procs.sweeper import spawn_sweeper

    if parallel < 1:
        raise SweepError(f"--parallel {parallel}: expected 1 or more")
    return spawn_sweeper(path, parallel)


def _start(
    sweep: Sweep,
    combo: dict[str, Any],
    index: int,
    device: str | None,
    notify: Notify,
    threads: int | None = None,
) -> _Slot | None:
    """Start (or pick up) one combination; marks it running (or done) in `sweep`."""
    from engine.jobs import ResumeJob, TrainJob, start_detached

    n = combo["n"]
    if combo["status"] == "running" and combo.get("run"):
        record = RunDir(sweep.runs_dir / combo["run"]).record(check_checkpoints=False)
        if record.live:
            notify({"event": "following", "n": n, "run": combo["run"], "status": "running"})
            return _Slot(n, combo["run"], record.info.get("pid"), index)
        if record.effective in ("killed", "stopped") and (RunDir(record.path).last_ckpt.exists()):
            sets = (f"train.device={device}",) if device else ()
            try:
                started = start_detached(ResumeJob(combo["run"], str(sweep.runs_dir), sets))
            except TorchdeckError as err:
                notify({"event": "failed_to_start", "n": n, "run": combo["run"],
                        "message": f"resume failed ({err}); starting it afresh"})  # fmt: skip
            else:
                notify({"event": "resumed", "n": n, "run": started.run_id, "status": "running"})
                return _Slot(n, started.run_id, started.pid, index)
        elif record.effective not in ("killed", "stopped"):
            combo["status"] = "done"  # finished, failed or diverged while no runner watched
            notify({"event": "ended", "n": n, "run": combo["run"], "status": record.effective})
            return None
        combo.setdefault("replaced", []).append(combo.pop("run"))
    config = combo_config(sweep, combo)
    if device or threads:
        from engine.presets import apply_overrides

        extra = {"train.device": device} if device else {}
        if threads:
            extra["train.threads"] = threads
        config = apply_overrides(config, extra)
    try:
        started = start_detached(TrainJob(config, str(sweep.runs_dir)))
    except TorchdeckError as err:
        combo["status"] = "done"
        combo["error"] = str(err)
        notify({"event": "failed_to_start", "n": n, "message": str(err)})
        return None
    combo["status"] = "running"
    combo["run"] = started.run_id
    notify({"event": "started", "n": n, "run": started.run_id, "status": "running",
            "values": combo["values"]})  # fmt: skip
    return _Slot(n, started.run_id, started.pid, index)


def _stop_all(path: Path, slots: dict[int, _Slot], notify: Notify, timeout_s: float = 60) -> None:
    """Ask every running run to stop (checkpoint, status stopped) and wait until they end."""
    from engine.handle import send_command

    runs_dir = read_sweep(path).runs_dir
    for slot in slots.values():
        send_command(runs_dir / slot.run_id, "stop")
    deadline = time.monotonic() + timeout_s
    while slots and time.monotonic() < deadline:
        for n, slot in list(slots.items()):
            if not (process_alive(slot.pid) if slot.pid else False):
                record = RunDir(runs_dir / slot.run_id).record(check_checkpoints=False)
                notify({"event": "stopped", "n": n, "run": slot.run_id,
                        "status": record.effective})  # fmt: skip
                del slots[n]
        time.sleep(0.1)


# --- the command line (prints; the app calls the functions above) -----------------------
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return _show(value)


def format_comparison(sweep: Sweep, sort: str | None = None) -> str:
    from engine.report import table

    header, rows, used = comparison(sweep, sort)
    counts = ", ".join(f"{v} {k}" for k, v in sweep.counts().items() if v)
    head = f"sweep {sweep.id} ({sweep.state}; {counts}), sorted by {used}"
    return head + "\n" + table([[_cell(c) for c in r] for r in rows], header)


def _print_event(item: dict[str, Any]) -> None:
    words = {
        "started": "started",
        "resumed": "resumed",
        "following": "following (still alive)",
        "ended": "ended",
        "stopped": "stopped",
        "failed_to_start": "could not start",
    }
    if "n" not in item:  # about the whole sweep
        print(f"sweep: {item.get('message', item.get('event'))}", flush=True)
        return
    what = words.get(item.get("event", ""), item.get("event"))
    line = f"sweep: combination {item.get('n')} {what}"
    if item.get("run"):
        line += f": run {item['run']}"
    if item.get("values"):
        line += " (" + ", ".join(f"{k}={_show(v)}" for k, v in item["values"].items()) + ")"
    if item.get("event") in ("ended", "stopped"):
        line += f" [{item.get('status')}]"
    if item.get("message"):
        line += f": {item['message']}"
    print(line, flush=True)


def _run_here(path: Path, parallel: int, sort: str | None) -> int:
    import signal
    import sys

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        print(
            "torchdeck: stopping the sweep: running runs stop with a checkpoint; "
            f"continue with: torchdeck sweep resume {path.name}",
            file=sys.stderr,
            flush=True,
        )
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        sweep = run_sweep(path, parallel, notify=_print_event, stop=stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(format_comparison(sweep, sort))
    if stop.is_set():
        return 130
    ok = all(
        c["status"] == "cancelled" or combo_status(sweep, c) == "finished" for c in sweep.combos
    )
    return 0 if ok else 1


def _go(sweep: Sweep, parallel: int, foreground: bool, sort: str | None) -> int:
    if foreground:
        return _run_here(sweep.path, parallel, sort)
    pid = start_sweep(sweep.path, parallel)
    print(
        f"sweep {sweep.id}: {len(sweep.combos)} runs, {parallel} at a time, "
        f"in the background (pid {pid}): {sweep.path}\n"
        f"follow it with: torchdeck sweeps {sweep.id}   (and torchdeck queue, torchdeck runs)"
    )
    return 0


def cmd_sweep(
    targets: Sequence[str],
    grid: Sequence[str],
    sets: Sequence[str],
    parallel: int,
    foreground: bool,
    sort: str | None,
    runs_dir: str | None,
    preset_dirs: Sequence[str],
) -> int:
    """`torchdeck sweep PRESET --grid ...`, `sweep resume ID`, `sweep show ID`."""
    if parallel < 1:
        raise SweepError(f"--parallel {parallel}: expected 1 or more")
    if targets[0] in ("resume", "show"):
        if len(targets) != 2:
            raise SweepError(f"sweep {targets[0]}: expected one sweep id")
        sweep = find_sweep(targets[1], runs_dir)
        if targets[0] == "show":
            print(format_comparison(sweep, sort))
            return 0
        if sweep.runner_alive:
            raise SweepError(
                f"sweep {sweep.id} is already running (pid {sweep.info['runner_pid']})"
            )
        if not sweep.unfinished:
            print(format_comparison(sweep, sort))
            print(f"sweep {sweep.id}: nothing left to run")
            return 0
        return _go(sweep, parallel, foreground, sort)
    if len(targets) != 1:
        raise SweepError(f"sweep {' '.join(targets)}: expected one preset (or resume/show ID)")
    plan = plan_sweep(targets[0], grid, sets, preset_dirs, runs_dir)
    same = find_unfinished_identical(plan)
    if same is not None:
        counts = same.counts()
        if same.runner_alive:
            print(
                f"an identical sweep is already running: {same.id} (pid "
                f"{same.info.get('runner_pid')}); follow it with: torchdeck sweeps {same.id}"
            )
            return 0
        print(
            f"an unfinished identical sweep exists: {same.id} ({counts['done']} of "
            f"{len(same.combos)} done): resuming it"
        )
        return _go(same, parallel, foreground, sort)
    return _go(create_sweep(plan), parallel, foreground, sort)


def cmd_sweeps(ref: str | None, sort: str | None, runs_dir: str | None) -> int:
    """`torchdeck sweeps`: every sweep; `torchdeck sweeps ID`: its comparison table."""
    from engine.report import table

    if ref:
        print(format_comparison(find_sweep(ref, runs_dir), sort))
        return 0
    sweeps = list_sweeps(runs_dir)
    if not sweeps:
        print("no sweeps yet")
        return 0
    rows = []
    for s in sweeps:
        c = s.counts()
        grid = " ".join(f"{k}={','.join(_show(v) for v in vs)}" for k, vs in s.grid)
        rows.append([s.id, s.state, f"{c['done']}/{len(s.combos)}", str(c["waiting"]), grid])
    print(table(rows, ["id", "state", "done", "waiting", "grid"]))
    return 0


def cmd_queue(args: Sequence[str], runs_dir: str | None) -> int:
    """`torchdeck queue`, `queue move SWEEP:N up|down|first|last`, `queue cancel SWEEP[:N]`."""
    from engine.report import table

    if not args:
        entries = queue_entries(runs_dir)
        if not entries:
            print("no waiting runs")
            return 0
        rows = [
            [e["ref"], str(e["position"]), e["sweep_state"],
             ", ".join(f"{k}={_show(v)}" for k, v in e["values"].items())]
            for e in entries
        ]  # fmt: skip
        print(table(rows, ["combination", "next", "sweep", "values"]))
        return 0
    if args[0] == "move" and len(args) == 3:
        order = move(args[1], args[2], runs_dir)
        print(f"{args[1]} moved {args[2]}; waiting order: {', '.join(map(str, order))}")
        return 0
    if args[0] == "cancel" and len(args) == 2:
        done = cancel(args[1], runs_dir)
        print(f"cancelled: {', '.join(done)}" if done else f"{args[1]}: nothing left to cancel")
        return 0
    raise SweepError(
        f"queue {' '.join(args)}: expected `queue`, `queue move SWEEP:N up|down|first|last` "
        "or `queue cancel SWEEP[:N]`"
    )
