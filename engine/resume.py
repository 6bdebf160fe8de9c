"""Resuming a run from its last checkpoint, and replaying a run as a new one."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.build import PreparedRun, build_parts, prepare_run
from engine.errors import ConfigError, RunDirError, TorchdeckError
from engine.presets import apply_overrides, parse_set, resolve_config
from engine.rundir import EVENTS_FILE, RunDir, find_run

# Keys that may change when a run continues; anything else would make it another run.
RESUMABLE_KEYS = (
    "optim.lr",
    "train.epochs",
    "train.steps",
    "train.device",
    "train.log_every_s",
    "train.stats_every_s",
    "train.checkpoint_every_s",
)


def prepare_resume(
    ref: str | Path,
    runs_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    source: str = "auto",
) -> tuple[PreparedRun, dict[str, Any] | None, float | None]:
    """Rebuild a run from a checkpoint: last.pt, or best.pt for a diverged run (its last.pt
    may hold finite but already exploding weights). Returns the prepared run, the checkpoint
    and the new learning rate to apply at the resume step (if --set optim.lr was given).

    A run with no checkpoint yet (killed early), or `source="fresh"`, starts again from
    step 0 in its folder: the same config and seed, so the same run; the checkpoint
    returned is then None and its log starts afresh."""
    run = find_run(str(ref), Path(runs_dir) if runs_dir else None)
    run.read_meta()  # a clear error for a folder without a readable run.toml
    record = run.record(check_checkpoints=False)
    if record.status is None:
        raise RunDirError(f"run {run.id}: {record.problem}")
    run.lock()  # a second resume of this run now fails, naming who holds it
    try:
        if record.live:
            raise RunDirError(f"run {run.id} is still running (pid {record.pid}): attach to it")
        return _prepare_resume(run, record, overrides, source)
    except BaseException:
        run.unlock()
        raise


def _prepare_resume(
    run: RunDir, record: Any, overrides: Sequence[str], source: str
) -> tuple[PreparedRun, dict[str, Any] | None, float | None]:
    parsed = [parse_set(o) for o in overrides]
    for key, _ in parsed:
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"--set {key}: cannot change on resume (only {', '.join(RESUMABLE_KEYS)}); "
                f"use `torchdeck replay {run.id} --set ...` for a new run"
            )
    recorded = run_config(run, record)
    path = checkpoint_for(run, record.status, source)
    ckpt = None if path is None else _load(run, path)
    config = recorded if ckpt is None else ckpt["config"]
    new_lr = None
    if parsed:
        config = apply_overrides(config, dict(parsed))
        if "optim.lr" in dict(parsed):
            new_lr = config["optim"]["lr"]
            config["optim"]["lr"] = (recorded if ckpt is None else ckpt["config"])["optim"]["lr"]
    if ckpt is not None:
        _check_not_done(run, ckpt, config)
    elif str(record.status) == "finished":
        raise RunDirError(f"run {run.id} finished: replay it rather than start it again")
    device, data, model, optimizer, loss_fn = build_parts(config)
    run.clean_leftovers()  # writes cut short by the crash
    trim_torn_line(run.path / EVENTS_FILE)
    meta = run.meta["run"]
    meta["status"] = "running"
    meta.pop("ended", None)
    meta["resumed"] = _int(meta.get("resumed")) + 1
    run.meta["config"] = config
    if ckpt is None:  # the same run from its start: nothing of the first attempt remains
        (run.path / EVENTS_FILE).write_bytes(b"")
        run.last_ckpt.unlink(missing_ok=True)
        run.best_ckpt.unlink(missing_ok=True)
        run.meta["summary"], run.meta["changes"] = {}, []
    run.claim()
    run.write_meta()
    return PreparedRun(config, device, data, model, optimizer, loss_fn, run), ckpt, new_lr


def trim_torn_line(path: Path) -> None:
    """Cut a half-written last line (the writer was killed mid-line) off the log, so the
    resumed run's first event starts a line of its own instead of being glued to it."""
    try:
        with open(path, "r+b") as fh:
            end = fh.seek(0, 2)
            pos = end
            while pos > 0:
                start = max(0, pos - 65536)
                fh.seek(start)
                chunk = fh.read(pos - start)
                if pos == end and chunk.endswith(b"\n"):
                    return
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    fh.truncate(start + cut + 1)
                    return
                pos = start
            fh.truncate(0)
    except FileNotFoundError:
        return


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def run_config(run: RunDir, record: Any) -> dict[str, Any]:
    """The run's own config (run.toml [config]), validated; RunDirError if damaged."""
    if not record.config:
        raise RunDirError(f"{run.path / 'run.toml'}: has no [config] (a damaged run)")
    try:
        return resolve_config(record.config)
    except ConfigError as err:
        raise RunDirError(f"{run.path / 'run.toml'} [config]: {err}") from None


def checkpoint_for(run: RunDir, status: Any, source: str) -> Path | None:
    """The checkpoint a resume starts from, or None to start again from step 0."""
    if source == "fresh":
        return None
    if source == "auto":
        diverged = str(status) == "diverged" and run.best_ckpt.exists()
        source = "best" if diverged else "last"
        if source == "last" and not run.last_ckpt.exists() and run.best_ckpt.exists():
            source = "best"  # evaluation wrote best.pt before the first last.pt
    path = run.best_ckpt if source == "best" else run.last_ckpt
    if path.exists():
        return path
    if source == "best" or run.last_ckpt.exists() or run.best_ckpt.exists():
        raise RunDirError(f"run {run.id}: no checkpoints/{path.name} to resume from")
    return None


def _load(run: RunDir, path: Path) -> dict[str, Any]:
    from engine.checkpoint import load_checkpoint, not_a_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except Exception as err:  # a truncated or foreign file: say so, no traceback
        raise RunDirError(f"{path}: unreadable checkpoint ({type(err).__name__})") from None
    problem = not_a_checkpoint(ckpt)
    if problem:
        raise RunDirError(f"{path}: unreadable checkpoint ({problem})")
    try:
        ckpt_config = resolve_config(ckpt["config"])
    except ConfigError:
        raise RunDirError(f"{path}: unreadable checkpoint (its config is not valid)") from None
    if not same_run(ckpt_config, run_config(run, run.record(check_checkpoints=False))):
        raise RunDirError(
            f"{path}: the checkpoint's config is not run {run.id}'s (a file copied from "
            f"another run?): refusing to resume from it"
        )
    ckpt["config"] = ckpt_config
    return ckpt


def same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two configs are one run's: equal but for the keys a resume may change."""

    def strip(config: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(config)
        for key in RESUMABLE_KEYS:
            section, name = key.split(".")
            out.get(section, {}).pop(name, None)
        out["train"].pop("steps", None)
        out["train"].pop("epochs", None)
        return out

    return strip(a) == strip(b)


def _check_not_done(run: RunDir, ckpt: dict[str, Any], config: dict[str, Any]) -> None:
    recipe = ckpt.get("recipe")
    early = recipe.get("early_stop") if isinstance(recipe, dict) else None
    if isinstance(early, dict) and early.get("reason"):
        raise RunDirError(
            f"run {run.id} ended: {early['reason']}; replay it (e.g. with "
            f"--set early_stop.patience=N) to train on"
        )
    train = config["train"]
    if train["steps"]:
        done = ckpt["step"] >= train["steps"]
    else:
        done = ckpt["epoch"] >= train["epochs"]
    if done:
        raise RunDirError(
            f"run {run.id} already reached its end (step {ckpt['step']}); extend it with "
            f"--set train.epochs=N (or train.steps=N), or replay it"
        )


def prepare_replay(
    ref: str | Path, runs_dir: str | Path | None = None, overrides: Sequence[str] = ()
) -> tuple[PreparedRun, list[dict[str, Any]]]:
    """A new run with the recorded config (plus overrides) and the recorded live changes."""
    run = find_run(str(ref), Path(runs_dir) if runs_dir else None)
    meta = run.read_meta()
    if not isinstance(meta.get("config"), dict):
        raise RunDirError(f"{run.path / 'run.toml'}: has no [config] to replay")
    try:
        config = resolve_config(meta["config"], overrides)
    except ConfigError as err:
        raise ConfigError(f"{run.path / 'run.toml'} [config]: {err}") from None
    changes = [
        c
        for c in run.record(check_checkpoints=False).changes
        if _int(c.get("step")) == c.get("step") and c.get("key") == "optim.lr"
    ]  # the trainer checks each value as it applies it (a bad one: a warning)
    target = Path(runs_dir) if runs_dir else run.path.parent
    prep = prepare_run(config, target)
    prep.run.meta["run"]["replay_of"] = run.id
    prep.run.write_meta()
    return prep, changes


def resumed_trainer(
    prep: PreparedRun,
    ckpt: dict[str, Any] | None,
    new_lr: float | None,
    sinks: Sequence[Any] = (),
    control: Any = None,
    dist: Any = None,
):
    """A Trainer positioned at the checkpoint, with --set optim.lr applied as a live change."""
    from engine.train.loop import Trainer

    trainer = Trainer(prep, sinks=sinks, control=control, dist=dist)
    if ckpt is None:
        trainer.notice = (
            f"run {prep.run.id} has no checkpoint yet: starting it again from step 0 "
            f"(same config and seed: the same run)"
        )
    else:
        trainer.restore(ckpt)
    if new_lr is not None:
        trainer.scheduled.insert(0, {"step": trainer.step, "key": "optim.lr", "new": new_lr})
    return trainer


# --- what a stopped, killed, failed or diverged run can do next -------------------------------


@dataclass(frozen=True)
class Option:
    """One way to go on with a run, as plain data for a dialog.

    kind      resume (from a checkpoint, in the run's folder), fresh (again from step 0 in
              the run's folder) or replay (a new run with the run's config and changes)
    source    the checkpoint a resume starts from: "last" or "best" (None otherwise)
    step      the step it starts from (0 for fresh and replay)
    lr        the learning rate proposed (None: the run's own)
    reached   the step the run had reached (a resume rolls back from there to `step`)
    label     one line that says all of it
    """

    kind: str
    source: str | None
    step: int
    lr: float | None
    reached: int
    label: str

    def job(self, run_dir: str | Path) -> Any:
        """The job that does it (engine.jobs.prepare or start_detached runs it)."""
        from engine.jobs import ReplayJob, ResumeJob

        sets = (f"optim.lr={self.lr!r}",) if self.lr is not None else ()
        if self.kind == "replay":
            return ReplayJob(str(run_dir), overrides=sets)
        source = self.source if self.kind == "resume" else "fresh"
        return ResumeJob(str(run_dir), overrides=sets, source=source or "auto")


def recovery_options(run_dir: str | Path) -> list[Option]:
    """What can work for this run, best first; [] for a live, finished or damaged run.

    A diverged run is offered a resume from each readable checkpoint at a tenth of the
    learning rate in effect there (the last stable one), naming the step it rolls back
    to, then a fresh start and a replay at a tenth of the last stable rate. A stopped,
    killed or failed run is offered a resume from last.pt, or a fresh start where there
    is no checkpoint yet (the same run), and a replay."""
    from engine.rundir import read_record

    run = RunDir(Path(run_dir))
    record = read_record(run.path, check_checkpoints=False)
    if record.status is None or record.live or record.effective not in (
        "stopped", "killed", "diverged", "failed"
    ):  # fmt: skip
        return []
    try:
        config = run_config(run, record)
    except RunDirError:
        return []
    diverged = record.effective == "diverged"
    summary = record.summary
    points = {}  # source -> (step, lr in effect at that checkpoint)
    for source in ("best", "last") if diverged else ("last", "best"):
        point = _usable(run, source, config)
        if point is not None and point[0] not in [p[0] for p in points.values()]:
            points[source] = point
    reached = _int(summary.get("diverged_step")) or _int(summary.get("steps"))
    reached = max([reached, *(step for step, _ in points.values())])
    options: list[Option] = []
    if diverged:
        for source, (step, lr) in points.items():
            new = lr / 10
            back = f" (rolls back from step {reached:,})" if reached > step else ""
            options.append(Option(
                "resume", source, step, new, reached,
                f"Resume from {source}.pt at step {step:,}{back} with lr {new:g}",
            ))  # fmt: skip
        latest = max(points.values(), default=None)
        stable = latest[1] if latest is not None else float(config["optim"]["lr"])
        new = stable / 10
        options.append(
            Option(
                "fresh",
                None,
                0,
                new,
                reached,
                f"Start again from step 0 with lr {new:g} (in this run's folder)",
            )
        )
        options.append(Option("replay", None, 0, new, reached,
                              f"Replay as a new run with lr {new:g}"))  # fmt: skip
        return options
    if points:
        source, (step, _) = next(iter(points.items()))
        back = f" (rolls back from step {reached:,})" if reached > step else ""
        options.append(Option("resume", source, step, None, reached,
                              f"Resume from {source}.pt at step {step:,}{back}"))  # fmt: skip
    else:
        options.append(
            Option(
                "fresh",
                None,
                0,
                None,
                reached,
                "Start again from step 0 (no checkpoint yet: the same run)",
            )
        )
    options.append(Option("replay", None, 0, None, reached, "Replay as a new run"))
    return options


def _usable(run: RunDir, source: str, config: dict[str, Any]) -> tuple[int, float] | None:
    """(step, lr in effect) of a checkpoint a resume can start from, or None."""
    path = run.best_ckpt if source == "best" else run.last_ckpt
    if not path.exists():
        return None
    try:
        ckpt = _load(run, path)
        lr = float(ckpt["optimizer"]["param_groups"][0]["lr"])
    except (TorchdeckError, KeyError, IndexError, TypeError, ValueError):
        return None
    train = config["train"]
    if (train["steps"] and ckpt["step"] >= train["steps"]) or (
        not train["steps"] and ckpt["epoch"] >= train["epochs"]
    ):
        return None
    return ckpt["step"], lr
