"""Issue 10, the engine's side: run records a user can trust. Each test names its bug."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
import torch
from test_lifecycle import KILLER, ROOT, assert_same_weights, final_weights, logged_losses

from engine.checkpoint import load_checkpoint
from engine.control import Control
from engine.errors import RunDirError
from engine.presets import resolve_config
from helpers import losses, train

EXPLODE = ["optim.lr=5.0"]  # neuron-linear at lr 5 diverges within a few steps


def meta_of(run: Path) -> dict:
    return tomllib.loads((run / "run.toml").read_text())


def epoch_events(events) -> list:
    return [e for e in events if e.type == "epoch"]


def run_events(run: Path) -> list:
    from engine.rundir import RunDir

    return RunDir(run).read_events()


def kill_at(where: str, preset: str, runs: Path, sets: list[str]) -> Path:
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, preset, str(runs), where, json.dumps(sets)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stdout + proc.stderr
    return next(runs.iterdir())


# --- 1. a run killed before its first checkpoint ----------------------------------------------


def test_resume_without_a_checkpoint_restarts_the_same_run(tmp_path, cli):
    sets = ["train.epochs=30", "train.log_every_s=0.001"]  # checkpoint_every_s: 30 s
    result, ref_events, ref_run = train("kink", tmp_path / "ref", *sets)
    run = kill_at("before_checkpoint", "kink", tmp_path / "killed", sets)
    assert not (run / "checkpoints" / "last.pt").exists()
    assert logged_losses(run)  # it did log steps before it died
    code, out, err = cli("resume", run.name, "--runs-dir", str(tmp_path / "killed"))
    assert code == 0, err
    assert err.strip().splitlines() == [
        f"torchdeck: run {run.name} has no checkpoint yet: starting it again from step 0 "
        "(same config and seed: the same run)"
    ]
    events = run_events(run)
    assert [e.type for e in events].count("run_started") == 1  # as if never killed
    assert logged_losses(run) == losses(ref_events)
    assert [(e.epoch, e.train_loss) for e in epoch_events(events)] == [
        (e.epoch, e.train_loss) for e in epoch_events(ref_events)
    ]
    assert_same_weights(final_weights(run), final_weights(ref_run))
    meta, ref = meta_of(run), meta_of(ref_run)
    assert meta["run"]["status"] == "finished"
    for key in ("final_loss", "epoch_loss", "steps", "epochs", "w1*w2*w3"):
        assert meta["summary"].get(key) == ref["summary"].get(key), key


# --- 2. best.pt stays best across sessions ----------------------------------------------------


def test_best_metric_travels_with_last_pt_across_sessions(tmp_path):
    from test_train_parts import fake_prep, save

    from engine.train.checkpointer import Checkpointer

    prep = fake_prep(tmp_path)
    first = Checkpointer(prep, every=1.0, best_by_eval=False)
    assert save(first, "last", 2.0) == ["last", "best"]  # session 1 ends (SIGINT): best 2.0
    second = Checkpointer(prep, every=1.0, best_by_eval=False)  # session 2 (resume)
    second.restore(load_checkpoint(prep.run.last_ckpt))
    assert second.best == 2.0
    assert save(second, "last", 79.7, step=7) == ["last"]  # worse: best.pt is left alone
    assert load_checkpoint(prep.run.best_ckpt)["step"] == 1
    evaluated = Checkpointer(prep, every=1.0, best_by_eval=True)
    evaluated.restore(load_checkpoint(prep.run.last_ckpt))
    assert not evaluated.improves(80.0) and not evaluated.improves(float("nan"))


def test_resume_at_a_worse_lr_keeps_best_pt(tmp_path, cli):
    runs = tmp_path / "runs"
    _, events, run = train("kink", runs, "train.epochs=20", "train.checkpoint_every_s=0")
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    code, _, err = cli("resume", run.name, "--set", "optim.lr=0.02", "--set", "train.epochs=24",
                       "--set", "train.checkpoint_every_s=0", "--runs-dir", str(runs))  # fmt: skip
    assert code in (0, 3), err
    after = load_checkpoint(run / "checkpoints" / "best.pt")
    later = [e.train_loss for e in epoch_events(run_events(run)) if e.epoch > 20]
    if min(later, default=math.inf) >= best["progress"]["best"]:
        assert after["step"] == best["step"]  # nothing better came: best.pt unchanged
    assert after["progress"]["best"] <= best["progress"]["best"]


# --- 3. recovery options ----------------------------------------------------------------------


def test_recovery_options_for_a_divergence_before_any_checkpoint(tmp_path):
    from engine.jobs import prepare
    from engine.resume import recovery_options

    result, _, run = train("neuron-linear", tmp_path, *EXPLODE)
    assert result.status == "diverged" and not (run / "checkpoints" / "last.pt").exists()
    options = recovery_options(run)
    assert [(o.kind, o.lr) for o in options] == [("fresh", 0.5), ("replay", 0.5)]
    assert "step 0" in options[0].label and "0.5" in options[0].label
    trainer = prepare(options[0].job(run))  # what it offers can work
    assert trainer.run().type == "finished"
    assert meta_of(run)["changes"][0]["new"] == 0.5


def test_recovery_options_roll_back_to_a_checkpoint_at_the_last_stable_lr(tmp_path):
    from engine.api import run_sync
    from engine.jobs import prepare
    from engine.resume import recovery_options

    control = Control()
    seen: list = []

    def raise_lr(event):
        seen.append(event)
        if event.type == "checkpoint" and event.kind == "last" and event.step == 10:
            control.set_lr(5.0)  # diverges soon after; checkpoints stop at finite weights

    config = resolve_config("neuron-linear", ["train.checkpoint_every_s=0", "optim.lr=0.01"])
    result = run_sync(config, tmp_path, sinks=[raise_lr], control=control)
    run = Path(seen[0].run_dir)
    assert result.status == "diverged"
    step = result.summary["diverged_step"]
    options = recovery_options(run)
    resumes = [o for o in options if o.kind == "resume"]
    assert resumes and all(o.step < step and o.reached == step for o in resumes)
    lrs = {o.source: o.lr for o in resumes}
    ckpt_lr = {
        s: load_checkpoint(run / "checkpoints" / f"{s}.pt")["optimizer"]["param_groups"][0]["lr"]
        for s in lrs
    }
    assert lrs == {s: lr / 10 for s, lr in ckpt_lr.items()}
    assert set(lrs) <= {"best", "last"} and resumes[0].source == "best"
    assert f"rolls back from step {step:,}" in resumes[0].label
    assert options[-1].kind == "replay"
    trainer = prepare(resumes[0].job(run))
    assert trainer.step == resumes[0].step
    assert trainer.run().type == "finished"


def test_recovery_options_for_killed_and_finished_runs(tmp_path, cli):
    from engine.resume import recovery_options

    _, _, done = train("neuron-linear", tmp_path / "a")
    assert recovery_options(done) == []
    code, _, err = cli("resume", str(done), "--from", "fresh")  # never wipes a finished run
    assert code == 2 and "replay it" in err and (done / "checkpoints" / "last.pt").exists()
    run = kill_at("before_checkpoint", "kink", tmp_path / "b", ["train.log_every_s=0.001"])
    assert [o.kind for o in recovery_options(run)] == ["fresh", "replay"]
    assert recovery_options(tmp_path / "nowhere") == []


# --- 4. one truth for step and epoch at a divergence ------------------------------------------


def test_divergence_counters_agree(tmp_path):
    sets = ["train.epochs=200", "optim.lr=5", "train.log_every_s=1000"]
    result, events, run = train("kink", tmp_path, *sets)
    assert result.status == "diverged"
    step, spe = result.summary["diverged_step"], 10
    summary = meta_of(run)["summary"]
    assert summary["steps"] == step == result.step
    assert summary["epochs"] == (step - 1) // spe
    assert summary["diverged_epoch"] == (step - 1) // spe + 1
    steps = [e for e in events if e.type == "steps"]
    for e in steps:
        assert e.epoch == (e.last_step - 1) // spe + 1
    assert steps[-1].last_step == step - 1
    assert all(e.step <= step for e in epoch_events(events))


# --- 5. stale numbers: elapsed excludes pauses; the final epoch's loss -------------------------


def test_elapsed_excludes_paused_time(tmp_path):
    import time

    from engine.api import run_sync

    control = Control()
    paused = threading.Event()

    def sink(event):
        if event.type == "epoch" and event.epoch == 2:
            control.pause()
        elif event.type == "paused":
            paused.set()

    def stop_while_paused():
        paused.wait(60)
        threading.Event().wait(1.5)  # the pause lasts 1.5 s of wall time
        control.stop()

    thread = threading.Thread(target=stop_while_paused)
    thread.start()
    config = resolve_config("kink", ["train.epochs=40", "train.log_every_s=0.01"])
    t0 = time.perf_counter()
    result = run_sync(config, tmp_path, sinks=[sink], control=control)
    wall_s = time.perf_counter() - t0
    thread.join()
    assert result.status == "stopped"
    assert result.summary["duration_s"] < wall_s - 1.4
    run = next(tmp_path.iterdir())
    active_s = load_checkpoint(run / "checkpoints" / "last.pt")["progress"]["active_s"]
    assert active_s == pytest.approx(result.summary["duration_s"], abs=2e-3)


# --- 8. epoch events ---------------------------------------------------------------------------


def test_final_epoch_event_is_not_dropped(tmp_path):
    result, events, run = train("kink", tmp_path, "train.epochs=50", "train.log_every_s=0.000001")
    epochs = epoch_events(events)
    assert [e.epoch for e in epochs] == list(range(1, 51))
    assert result.summary["epoch_loss"] == epochs[-1].train_loss
    assert meta_of(run)["summary"]["epoch_loss"] == epochs[-1].train_loss


@pytest.mark.parametrize("every", ["0", "0.000000001"], ids=["at-epoch-ends", "at-each-tick"])
def test_resume_from_an_epoch_end_checkpoint_keeps_epoch_means(tmp_path, cli, every):
    from engine.api import run_sync
    from engine.export import iter_epoch_rows
    from engine.rundir import RunDir

    sets = ["train.epochs=6", "train.log_every_s=0.000001", f"train.checkpoint_every_s={every}"]
    _, ref_events, _ = train("kink", tmp_path / "ref", *sets)
    control = Control()

    def stop_at_3(event):  # right after epoch 3's checkpoint, before its mean is known
        if event.type == "checkpoint" and event.kind == "last" and event.step == 30:
            control.stop()

    result = run_sync(resolve_config("kink", sets), tmp_path / "runs", sinks=[stop_at_3],
                      control=control)  # fmt: skip
    assert result.status == "stopped"
    run = next((tmp_path / "runs").iterdir())
    code, _, err = cli("resume", run.name, "--runs-dir", str(tmp_path / "runs"))
    assert code == 0, err
    rows = [(r["epoch"], r["train_loss"]) for r in iter_epoch_rows(RunDir(run))]
    assert rows == [(e.epoch, e.train_loss) for e in epoch_events(ref_events)]


def test_kill_after_a_checkpoint_on_an_epochs_last_step_keeps_epoch_rows(tmp_path, cli):
    from engine.export import iter_epoch_rows
    from engine.rundir import RunDir

    # last.pt written by the tick at step 30, epoch 3's last step (before end_epoch)
    sets = ["train.epochs=6", "train.log_every_s=0.000001"]
    _, ref_events, _ = train("kink", tmp_path / "ref", *sets)
    run = kill_at("tick_checkpoint_at_30", "kink", tmp_path / "killed", sets)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 30
    code, _, err = cli("resume", run.name, "--runs-dir", str(tmp_path / "killed"))
    assert code == 0, err
    rows = [(r["epoch"], r["train_loss"]) for r in iter_epoch_rows(RunDir(run))]
    assert rows == [(e.epoch, e.train_loss) for e in epoch_events(ref_events)]


def test_resume_after_a_torn_log_line_keeps_epoch_rows(tmp_path, cli):
    from engine.export import iter_epoch_rows
    from engine.rundir import RunDir

    sets = ["train.epochs=20", "train.log_every_s=0.002", "train.checkpoint_every_s=0.01"]
    _, ref_events, _ = train("kink", tmp_path / "ref", *sets)
    run = kill_at("after_checkpoint", "kink", tmp_path / "killed", sets)
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    epoch = step // 10 + 1
    with open(run / "events.jsonl", "a") as fh:  # logged after last.pt, then cut mid-line
        steps = {"type": "steps", "first_step": step + 1, "epoch": epoch,
                 "losses": [123.0] * (epoch * 10 - step), "lr": 0.001, "elapsed_s": 1.0,
                 "samples_per_s": 1.0, "steps_per_s": 1.0}  # fmt: skip
        later = {"type": "epoch", "epoch": epoch, "step": epoch * 10, "train_loss": 123.0,
                 "val_loss": None, "metrics": {}}  # fmt: skip
        fh.write(json.dumps(steps) + "\n" + json.dumps(later) + "\n")
        fh.write('{"type": "epoch", "epoch": 19, "step": 190, "tr')
    code, _, err = cli("resume", run.name, "--runs-dir", str(tmp_path / "killed"))
    assert code == 0, err
    rows = [(r["epoch"], r["train_loss"]) for r in iter_epoch_rows(RunDir(run))]
    assert rows == [(e.epoch, e.train_loss) for e in epoch_events(ref_events)]
    assert logged_losses(run) == losses(ref_events)


def test_epoch_means_do_not_depend_on_fetch_chunking():
    from engine.train.losses import LossBuffer

    rng = torch.Generator().manual_seed(0)
    values = [float(v) for v in torch.rand(60, generator=rng, dtype=torch.float64) + 1]
    values[::20] = [2.0**53] * 3  # 2^53 + 1 + 1 is 2^53 one by one, 2^53 + 2 grouped
    spe = 20

    def means(chunks: list[int]) -> list[float]:
        buf, out, step = LossBuffer(), [], 0
        for size in chunks:
            for _ in range(size):
                buf.pending.append(torch.tensor(values[step], dtype=torch.float64))
                step += 1
                if step % spe == 0:
                    buf.end_epoch(step // spe, step)
            flushed = buf.flush()
            out += [m for _, _, m in flushed.epochs] if flushed else []
        return out

    one = means([60])
    assert len(one) == 3
    for chunks in ([1] * 60, [1, 59], [7, 13, 40], [19, 2, 20, 19], [3] * 20):
        assert means(chunks) == one  # bitwise


def test_epoch_means_are_bitwise_independent_of_log_every_s(tmp_path):
    runs = []
    for i, every in enumerate(("0.000001", "1000")):
        _, events, _ = train("kink", tmp_path / str(i), "train.epochs=30",
                             f"train.log_every_s={every}")  # fmt: skip
        runs.append([(e.epoch, e.train_loss) for e in epoch_events(events)])
    assert runs[0] == runs[1] and len(runs[0]) == 30


# --- 9. a full disk ----------------------------------------------------------------------------


def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def _no_temp_files(run: Path) -> None:
    assert not [p for p in run.rglob(".*.tmp")]


def test_full_disk_while_writing_events(tmp_path, cli, monkeypatch):
    from engine.rundir import RunDir

    real = RunDir.flush_events
    calls = {"n": 0}

    def flush_events(self):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise _enospc(self.path / "events.jsonl")
        real(self)

    monkeypatch.setattr(RunDir, "flush_events", flush_events)
    runs = tmp_path / "runs"
    code, out, err = cli("train", "kink", "--set", "train.epochs=300",
                         "--set", "train.log_every_s=0.001", "--runs-dir", str(runs))  # fmt: skip
    run = next(runs.iterdir())
    assert code == 1 and "Traceback" not in out + err
    needle = f"no space left on device ({run / 'events.jsonl'})"
    assert needle in out
    meta = meta_of(run)
    assert meta["run"]["status"] == "failed" and meta["summary"]["reason"] == needle
    _no_temp_files(run)


def test_full_disk_while_writing_run_toml(tmp_path, cli, monkeypatch):
    import engine.rundir

    real = engine.rundir.atomic_write_bytes
    state = {"full": False}

    def atomic_write_bytes(path, write):
        if state["full"]:
            raise _enospc(path)
        real(path, write)

    monkeypatch.setattr(engine.rundir, "atomic_write_bytes", atomic_write_bytes)

    def fill(event):
        if event.type == "epoch" and event.epoch == 3:
            state["full"] = True

    from engine.cli import run_job
    from engine.jobs import TrainJob

    config = resolve_config("kink", ["train.epochs=5", "train.checkpoint_every_s=0"])
    lines: list = []

    def printer():
        def sink(event):
            fill(event)
            if event.type == "failed":
                lines.append(event.reason)

        return sink

    code = run_job(TrainJob(config, str(tmp_path)), False, printer=printer)
    run = next(tmp_path.iterdir())
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("no space left on device (") and str(run) in lines[0]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] > 0  # the last one loads
    _no_temp_files(run)


def test_full_disk_while_writing_a_checkpoint(tmp_path, cli, monkeypatch):
    import builtins

    import engine.atomic

    state = {"full": False}

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise _enospc("")  # what the OS says: no file name

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def fake_open(path, mode="r", *args, **kwargs):
        fh = builtins.open(path, mode, *args, **kwargs)
        checkpoint = ".pt." in Path(path).name  # .last.pt.PID.tmp: run.toml still fits
        return Full(fh) if state["full"] and checkpoint else fh

    monkeypatch.setattr(engine.atomic, "open", fake_open, raising=False)

    def fill(event):
        if event.type == "checkpoint" and event.step >= 30:
            state["full"] = True

    config = resolve_config("kink", ["train.epochs=20", "train.checkpoint_every_s=0"])
    from engine.api import run_sync

    result = run_sync(config, tmp_path, sinks=[fill])
    run = next(tmp_path.iterdir())
    assert result.type == "failed"
    where = [f"no space left on device ({run / 'checkpoints' / n})" for n in ("last.pt", "best.pt")]
    assert result.reason in where
    assert meta_of(run)["run"]["status"] == "failed"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 30  # the previous one
    _no_temp_files(run)


# --- 10. resume refuses a checkpoint of another run ---------------------------------------------


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, cli):
    runs = tmp_path / "runs"
    _, _, kink = train("kink", runs, "train.epochs=5")
    _, _, other = train("neuron-linear", runs, "train.steps=20")
    meta = meta_of(kink)
    (kink / "run.toml").write_text((kink / "run.toml").read_text().replace(
        'status = "finished"', 'status = "stopped"'))  # fmt: skip
    (kink / "checkpoints" / "last.pt").write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    code, _, err = cli("resume", kink.name, "--set", "train.epochs=10", "--runs-dir", str(runs))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not run" in err and kink.name in err
    assert meta_of(kink)["config"] == meta["config"]  # [config] untouched


# --- 11. live commands validated; one lock per run folder; [report] errors -------------------


def test_bad_set_lr_values_are_warnings_and_the_run_goes_on(tmp_path, cli):
    from engine.api import run_sync

    control = Control()
    bad = ["abc", None, [1], -1, 0, float("nan"), float("inf"), True]

    def sink(event):
        if event.type == "epoch" and event.epoch == 2:
            for value in bad:
                control.send("set_lr", value)
            control.set_lr(0.0005)

    events: list = []
    config = resolve_config("kink", ["train.epochs=5", "train.log_every_s=0.001"])
    result = run_sync(config, tmp_path, sinks=[sink, events.append], control=control)
    assert result.status == "finished"
    warnings = [e.message for e in events if e.type == "warning"]
    assert len(warnings) == len(bad) and all("ignored" in w for w in warnings)
    run = next(tmp_path.iterdir())
    assert [c["new"] for c in meta_of(run)["changes"]] == [0.0005]
    code, _, err = cli("replay", run.name, "--runs-dir", str(tmp_path))
    assert code == 0, err


def test_one_lock_per_run_folder(tmp_path, cli):
    from engine.jobs import ResumeJob, prepare

    runs = tmp_path / "runs"
    run = kill_at("before_checkpoint", "kink", runs, ["train.log_every_s=0.001"])
    first = prepare(ResumeJob(run.name, str(runs)))
    code, _, err = cli("resume", run.name, "--runs-dir", str(runs))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"in use by pid {os.getpid()}" in err
    with pytest.raises(RunDirError, match="in use"):
        prepare(ResumeJob(run.name, str(runs)))
    first.control.stop()
    assert first.run().status == "stopped"
    code, _, err = cli("resume", run.name, "--runs-dir", str(runs))  # the lock is free again
    assert code == 0, err


def test_report_line_naming_a_missing_parameter_is_a_warning(tmp_path):
    from engine.api import run_sync

    config = resolve_config("neuron-linear")
    config["report"] = {"w": "p['0.weight']", "b": "p['0.bias']"}
    events: list = []
    result = run_sync(config, tmp_path, sinks=[events.append])
    assert result.type == "finished" and result.status == "finished"
    assert "report_error" in result.summary and "[report]" in result.summary["report_error"]
    assert any(e.type == "warning" and "[report]" in e.message for e in events)
    assert meta_of(next(tmp_path.iterdir()))["run"]["status"] == "finished"
