"""Issue 13, the [schedule] section: each schedule's per-step lr is torch.optim.lr_scheduler's
for the same settings (read back from the run's export), a live lr change scales the
schedule from its step on, and replay reproduces it bit for bit."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from torch.optim import lr_scheduler as L

from engine.control import Control
from engine.export import iter_epoch_rows, step_rows
from engine.rundir import RunDir
from engine.summary import read_curve
from engine.train.schedule import optimizer_steps
from helpers import losses, train

KINK = ["train.epochs=20", "train.log_every_s=0.002"]  # 10 steps per epoch, 200 steps, lr 1e-3


def torch_lrs(n: int, make, lr: float = 0.001) -> list[float]:
    """The rate of each of n optimizer steps under the scheduler `make(optimizer)` builds."""
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=lr)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def run_lrs(run: Path) -> list[float]:
    return [lr for _, _, _, lr in step_rows(RunDir(run))]


def test_warmup_cosine_lr_per_step_is_torch_s(tmp_path):
    _, events, run = train("kink", tmp_path, *KINK, 'schedule.name="cosine"',
                           "schedule.warmup_steps=10", "schedule.min_lr=1e-4")  # fmt: skip
    ref = torch_lrs(200, lambda o: L.SequentialLR(
        o, [L.LinearLR(o, start_factor=1 / 11, total_iters=10),
            L.CosineAnnealingLR(o, T_max=190, eta_min=1e-4)], milestones=[10]))  # fmt: skip
    assert run_lrs(run) == ref
    assert ref[0] < ref[10] == 0.001 and ref[-1] < 0.0002  # it warmed up, then annealed
    # the event that says a batch of steps holds their rates; lr is the last one's
    steps = [e for e in events if e.type == "steps"]
    assert all(len(e.lrs) == len(e.losses) and e.lr == e.lrs[-1] for e in steps)
    # export --epochs: each epoch's lr is the one its last step used
    assert [r["lr"] for r in iter_epoch_rows(RunDir(run))] == ref[9::10]
    # the summary's lr curve (what the app draws) follows the schedule
    curve = read_curve(run)
    assert curve.lr[0] == ref[0] and curve.lr[-1] == ref[-1] and len(curve.lr) > 2


def test_resume_refuses_to_change_the_recipe(tmp_path, cli):
    _, _, run = train("kink", tmp_path, "train.steps=30", 'schedule.name="cosine"')
    for setting in ('schedule.name="step"', "train.accumulate=2", "early_stop.patience=2"):
        code, _, err = cli("resume", run.name, "--set", setting, "--runs-dir", str(tmp_path))
        assert code == 2 and "cannot change on resume" in err, err


@pytest.mark.parametrize(
    ("sets", "make"),
    [
        (
            ['schedule.name="step"', "schedule.step_size=30", "schedule.gamma=0.5"],
            lambda o: L.StepLR(o, step_size=30, gamma=0.5),
        ),
        (
            ['schedule.name="exponential"', "schedule.gamma=0.99"],
            lambda o: L.ExponentialLR(o, gamma=0.99),
        ),
        (
            ['schedule.name="onecycle"', "schedule.max_lr=0.002", "schedule.pct_start=0.25"],
            lambda o: L.OneCycleLR(o, max_lr=0.002, total_steps=200, pct_start=0.25),
        ),
        (
            ['schedule.name="constant"', "schedule.warmup_steps=20"],
            lambda o: L.LinearLR(o, start_factor=1 / 21, total_iters=20),
        ),
    ],
    ids=["step", "exponential", "onecycle", "constant-warmup"],
)
def test_each_schedule_is_torch_s(tmp_path, sets, make):
    _, _, run = train("kink", tmp_path, *KINK, *sets)
    assert run_lrs(run) == torch_lrs(200, make)


def test_constant_without_warmup_is_the_plain_step(tmp_path):
    """No schedule at all: nothing per step is recorded, the log is as before."""
    _, events, run = train("kink", tmp_path, *KINK, 'schedule.name="constant"')
    assert all(e.lrs == () for e in events if e.type == "steps")
    assert '"lrs"' not in (run / "events.jsonl").read_text()
    assert set(run_lrs(run)) == {0.001}


def test_accumulation_steps_the_schedule_per_optimizer_step(tmp_path):
    """accumulate = 3 over 10 batches an epoch: optimizer steps after batches 3, 6, 9, 10;
    every batch of a cycle logs the rate its update uses."""
    assert optimizer_steps(200, 10, 3) == 80 and optimizer_steps(25, 10, 3) == 10
    _, _, run = train("kink", tmp_path, *KINK, 'schedule.name="cosine"', "train.accumulate=3")
    ref = torch_lrs(80, lambda o: L.CosineAnnealingLR(o, T_max=80))
    per_batch = []
    for epoch in range(20):
        for cycle, size in enumerate((3, 3, 3, 1)):
            per_batch += [ref[epoch * 4 + cycle]] * size
    assert run_lrs(run) == per_batch


def test_plateau_without_eval_decays_on_the_epoch_loss(tmp_path):
    _, events, run = train("kink", tmp_path, *KINK, 'schedule.name="plateau"',
                           "schedule.patience=0", "schedule.factor=0.5")  # fmt: skip
    epochs = [e.train_loss for e in events if e.type == "epoch"]
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.001)
    plateau = L.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    expected = []
    for loss in epochs:
        expected += [opt.param_groups[0]["lr"]] * 10
        plateau.step(loss)
    assert run_lrs(run) == expected
    assert min(expected) < 0.001  # it did decay


def test_live_lr_change_scales_the_schedule_and_replay_reproduces_it(tmp_path, cli):
    control = Control()
    sent = {"done": False}

    def change(event):  # a change from the app, at whatever step the run is at
        if event.type == "steps" and event.last_step >= 60 and not sent["done"]:
            sent["done"] = True
            control.set_lr(0.0005)

    from engine.api import run_sync
    from engine.presets import resolve_config

    seen: list = []
    sets = [*KINK, 'schedule.name="cosine"', "schedule.warmup_steps=10"]
    run_sync(resolve_config("kink", sets), tmp_path / "a", sinks=[seen.append, change],
             control=control)  # fmt: skip
    run = Path(seen[0].run_dir)
    change_step = tomllib.loads((run / "run.toml").read_text())["changes"][0]["step"]
    lrs = run_lrs(run)
    before = lrs[change_step - 1]
    # from the change on, the schedule is the old one times new/old
    plain = torch_lrs(200, lambda o: L.SequentialLR(
        o, [L.LinearLR(o, start_factor=1 / 11, total_iters=10),
            L.CosineAnnealingLR(o, T_max=190)], milestones=[10]))  # fmt: skip
    assert lrs[:change_step] == plain[:change_step]
    assert lrs[change_step] == 0.0005
    factor = 0.0005 / plain[change_step]
    for got, want in zip(lrs[change_step + 1 :], plain[change_step + 1 :], strict=True):
        assert got == pytest.approx(want * factor, rel=1e-6)
    assert before != 0.0005

    code, out, err = cli("replay", run.name, "--runs-dir", str(tmp_path / "a"))
    assert code == 0, err
    replay = next(p for p in (tmp_path / "a").iterdir() if p != run)
    assert run_lrs(replay) == lrs
    assert [r[2] for r in step_rows(RunDir(replay))] == losses(seen)
