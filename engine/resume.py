"""Resuming a run from its last checkpoint, and replaying a run as a new one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.build import PreparedRun, build_parts, prepare_run
from engine.errors import ConfigError, RunDirError
from engine.presets import apply_overrides, parse_set, resolve_config
from engine.rundir import RunDir, find_run

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
) -> tuple[PreparedRun, dict[str, Any], float | None]:
    """Rebuild a run from a checkpoint: last.pt, or best.pt for a diverged run (its last.pt
    may hold finite but already exploding weights). Returns the prepared run, the checkpoint
    and the new learning rate to apply at the resume step (if --set optim.lr was given)."""
    from engine.checkpoint import load_checkpoint

    run = find_run(str(ref), Path(runs_dir) if runs_dir else None)
    run.read_meta()  # a clear error for a folder without a readable run.toml
    record = run.record(check_checkpoints=False)
    if record.live:
        pid = record.info.get("pid")
        raise RunDirError(f"run {run.id} is still running (pid {pid}): attach to it")
    if source == "auto":
        diverged = record.status == "diverged" and run.best_ckpt.exists()
        source = "best" if diverged else "last"
    path = run.best_ckpt if source == "best" else run.last_ckpt
    if not path.exists():
        raise RunDirError(f"run {run.id}: no checkpoints/{path.name} to resume from")
    try:
        ckpt = load_checkpoint(path)
    except Exception as err:  # a truncated or foreign file: say so, no traceback
        raise RunDirError(f"{path}: unreadable checkpoint ({type(err).__name__})") from None
    parsed = [parse_set(o) for o in overrides]
    for key, _ in parsed:
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"--set {key}: cannot change on resume (only {', '.join(RESUMABLE_KEYS)}); "
                f"use `torchdeck replay {run.id} --set ...` for a new run"
            )
    config = ckpt["config"]
    new_lr = None
    if parsed:
        config = apply_overrides(config, dict(parsed))
        if "optim.lr" in dict(parsed):
            new_lr = config["optim"]["lr"]
            config["optim"]["lr"] = ckpt["config"]["optim"]["lr"]
    _check_not_done(run, ckpt, config)
    device, data, model, optimizer, loss_fn = build_parts(config)
    for leftover in run.checkpoints.glob(".*.tmp"):  # a write cut short by the crash
        leftover.unlink(missing_ok=True)
    run.meta["run"]["status"] = "running"
    run.meta["run"].pop("ended", None)
    run.meta["run"]["resumed"] = int(run.meta["run"].get("resumed", 0)) + 1
    run.meta["config"] = config
    run.claim()
    run.write_meta()
    return PreparedRun(config, device, data, model, optimizer, loss_fn, run), ckpt, new_lr


def _check_not_done(run: RunDir, ckpt: dict[str, Any], config: dict[str, Any]) -> None:
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
    if "config" not in meta:
        raise RunDirError(f"{run.path / 'run.toml'}: has no [config] to replay")
    try:
        config = resolve_config(meta["config"], overrides)
    except ConfigError as err:
        raise ConfigError(f"{run.path / 'run.toml'} [config]: {err}") from None
    target = Path(runs_dir) if runs_dir else run.path.parent
    prep = prepare_run(config, target)
    prep.run.meta["run"]["replay_of"] = run.id
    prep.run.write_meta()
    return prep, list(meta.get("changes", []))


def resumed_trainer(
    prep: PreparedRun,
    ckpt: dict[str, Any],
    new_lr: float | None,
    sinks: Sequence[Any] = (),
    control: Any = None,
    dist: Any = None,
):
    """A Trainer positioned at the checkpoint, with --set optim.lr applied as a live change."""
    from engine.train.loop import Trainer

    trainer = Trainer(prep, sinks=sinks, control=control, dist=dist)
    trainer.restore(ckpt)
    if new_lr is not None:
        trainer.scheduled.insert(0, {"step": trainer.step, "key": "optim.lr", "new": new_lr})
    return trainer
