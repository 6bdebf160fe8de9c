"""The training loop's parts, one by one: loss buffer, checkpointer, strategy, run writer."""

from __future__ import annotations

import math
import threading
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from engine import events as ev
from engine.control import Control
from engine.rundir import RunDir
from engine.train.checkpointer import Checkpointer, nonfinite_params
from engine.train.losses import Diverged, LossBuffer
from engine.train.strategy import DDP, SYNC_STEPS, OneProcess
from engine.train.writer import RunWriter

# --- the loss buffer -------------------------------------------------------------------------


def fill(buf: LossBuffer, *values: float) -> None:
    for v in values:
        buf.pending.append(torch.tensor(v))


def test_loss_buffer_fetches_in_one_go_and_numbers_the_steps():
    buf = LossBuffer()
    assert buf.flush() is None
    fill(buf, 1.0, 2.0, 3.0)
    out = buf.flush()
    assert (out.first_step, out.losses, out.epochs, out.diverged) == (1, [1.0, 2.0, 3.0], [], None)
    assert buf.pending == [] and buf.final_loss == 3.0
    fill(buf, 4.0)
    assert buf.flush().first_step == 4


def test_loss_buffer_epoch_means_span_flushes():
    buf = LossBuffer()
    fill(buf, 1.0, 2.0)
    buf.flush()
    fill(buf, 3.0, 4.0, 10.0)
    buf.end_epoch(1, 4)  # epoch 1 = steps 1..4
    fill(buf, 20.0)
    out = buf.flush()
    assert out.epochs == [(1, 4, 2.5)]
    assert buf.last_epoch_loss == 2.5
    assert (buf.epoch_sum, buf.epoch_count) == (30.0, 2)  # steps 5 and 6 count to epoch 2
    assert buf.close_epoch() == 15.0 and (buf.epoch_sum, buf.epoch_count) == (0.0, 0)


def test_loss_buffer_reports_divergence_at_its_step():
    buf = LossBuffer()
    fill(buf, 1.0, 2.0)
    buf.flush()
    fill(buf, 3.0, 5.0)
    buf.end_epoch(1, 4)
    fill(buf, float("nan"), 6.0)
    buf.end_epoch(2, 6)
    out = buf.flush()
    assert out.losses == [3.0, 5.0]  # the losses stop before the non-finite one
    assert out.epochs == [(1, 4, 2.75)]  # the epoch that ended before it still closes
    assert isinstance(out.diverged, Diverged) and out.diverged.step == 5
    assert "nan" in out.diverged.what
    fill(buf, math.inf)
    assert buf.flush().diverged.step == 5  # the next flush starts after the fetched steps


def test_loss_buffer_reduces_before_the_fetch_and_restores():
    seen = []

    def mean_over_ranks(t):
        seen.append(t.shape)
        return t * 2

    buf = LossBuffer(mean_over_ranks)
    fill(buf, 1.0, 2.0)
    assert buf.flush().losses == [2.0, 4.0] and seen == [torch.Size([2])]
    buf.restore(40, 7.0, 2, {"last_epoch_loss": 1.5, "final_loss": 3.0})
    assert (buf.flushed_step, buf.epoch_sum, buf.epoch_count) == (40, 7.0, 2)
    assert (buf.last_epoch_loss, buf.final_loss) == (1.5, 3.0)
    assert buf.state() == {"epoch_loss_sum": 7.0, "epoch_loss_count": 2}
    fill(buf, 1.0)
    buf.discard()
    assert buf.flush() is None


# --- the checkpointer ------------------------------------------------------------------------


class FakeData:
    def __init__(self) -> None:
        self.loaded = None

    def state(self):
        return {"generator": torch.tensor([1, 2, 3])}

    def load_state(self, state):
        self.loaded = state


def fake_prep(tmp_path: Path) -> SimpleNamespace:
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    run = SimpleNamespace(
        last_ckpt=tmp_path / "checkpoints" / "last.pt",
        best_ckpt=tmp_path / "checkpoints" / "best.pt",
    )
    return SimpleNamespace(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data=FakeData(),
        config={"name": "x", "train": {}},
        run=run,
    )


def save(ckpt: Checkpointer, kind: str, epoch_loss: float | None, step: int = 1) -> list[str]:
    written: list[str] = []
    progress = {"active_s": 1.0, "last_epoch_loss": epoch_loss, "final_loss": None}
    payload = ckpt.payload({"step": step}, progress, [{"step": 0}], [])
    ckpt.write(kind, payload, lambda kind, path: written.append(kind))
    return written


def test_checkpointer_best_follows_epoch_loss_at_last_writes(tmp_path):
    prep = fake_prep(tmp_path)
    ckpt = Checkpointer(prep, every=1.0, best_by_eval=False)
    assert save(ckpt, "last", None) == ["last"]  # no epoch closed yet
    assert save(ckpt, "last", 2.0) == ["last", "best"]
    assert save(ckpt, "last", 3.0) == ["last"]
    assert save(ckpt, "last", float("nan")) == ["last"]
    assert save(ckpt, "last", 1.0, step=5) == ["last", "best"]
    best = torch.load(prep.run.best_ckpt, weights_only=True)
    # the best travels with the checkpoint it is in (issue 10, bug 2): a resume compares
    # against it; last.pt carries it too
    assert best["step"] == 5 and best["progress"]["best"] == 1.0
    assert torch.load(prep.run.last_ckpt, weights_only=True)["progress"]["best"] == 1.0
    assert ckpt.best == 1.0 and ckpt.last_t > 0
    assert best["changes"] == [{"step": 0}] and best["config"] == prep.config
    assert isinstance(best["rng"]["data"]["generator"], torch.Tensor)


def test_checkpointer_with_eval_leaves_best_to_the_test_loss(tmp_path):
    ckpt = Checkpointer(fake_prep(tmp_path), every=0.0, best_by_eval=True)
    assert save(ckpt, "last", 0.1) == ["last"]
    assert ckpt.improves(0.5) and not ckpt.improves(0.6) and ckpt.improves(0.4)
    assert save(ckpt, "best", None) == ["best"]


def test_checkpointer_is_due_by_time_or_at_epoch_ends():
    timed = Checkpointer(SimpleNamespace(), every=10.0, best_by_eval=False)
    timed.last_t = 100.0
    assert not timed.due(105.0) and timed.due(110.0) and not timed.due(105.0, epoch_end=True)
    every_epoch = Checkpointer(SimpleNamespace(), every=0.0, best_by_eval=False)
    assert not every_epoch.due(1e9) and every_epoch.due(0.0, epoch_end=True)


def test_checkpointer_never_writes_non_finite_weights(tmp_path):
    prep = fake_prep(tmp_path)
    ckpt = Checkpointer(prep, every=1.0, best_by_eval=False)
    save(ckpt, "last", 1.0)
    with torch.no_grad():
        prep.model.bias.fill_(float("inf"))
    assert nonfinite_params(prep.model) == ["bias"]
    with pytest.raises(Diverged) as err:
        save(ckpt, "last", 0.5, step=9)
    assert err.value.step == 9 and "bias" in err.value.what
    assert torch.load(prep.run.last_ckpt, weights_only=True)["step"] == 1


def test_checkpointer_restores_weights_optimizer_data_and_best(tmp_path):
    prep = fake_prep(tmp_path)
    ckpt = Checkpointer(prep, every=1.0, best_by_eval=False)
    save(ckpt, "last", 2.0)
    saved = torch.load(prep.run.last_ckpt, weights_only=True)
    weights = {k: v.clone() for k, v in prep.model.state_dict().items()}
    with torch.no_grad():
        prep.model.weight.zero_()
    other = Checkpointer(prep, every=1.0, best_by_eval=False)
    progress = other.restore(saved)
    assert progress["active_s"] == 1.0 and other.best == 2.0  # the best travels in last.pt
    for k, v in prep.model.state_dict().items():
        assert torch.equal(v, weights[k])
    assert torch.equal(prep.data.loaded["generator"], torch.tensor([1, 2, 3]))


# --- the strategy ----------------------------------------------------------------------------


class FakeCtx:
    def __init__(self, rank: int) -> None:
        self.is_main = rank == 0
        self.rank, self.world = rank, 2
        self.sent: list = []
        self.stop_asked = threading.Event()  # set by SIGINT/SIGTERM in a real rank

    def mean(self, t):
        return t

    def broadcast(self, obj):
        self.sent.append(obj)
        return obj if obj is not None else [("set_lr", 0.5)]


def test_one_process_takes_commands_straight_from_the_control():
    s = OneProcess(SimpleNamespace(model="m"))
    control = Control()
    assert s.model == "m" and s.is_main and s.reduce is None and s.sync_every == 0
    assert s.polled(control) is control and s.tick_every(2.0) == 2.0
    control.pause()
    assert s.commands(control) == [("pause", None)] and not control.pending
    control.resume()
    assert s.wait_command(control) == ("resume", None)


def test_ddp_relays_rank_0s_commands_at_sync_points():
    prep = SimpleNamespace(model=torch.nn.Linear(1, 1), train_model="ddp(m)")
    control = Control()
    main, other = DDP(prep, FakeCtx(0)), DDP(prep, FakeCtx(1))
    assert main.model == "ddp(m)" and main.sync_every == SYNC_STEPS and main.flush_at_epoch_end
    assert main.tick_every(2.0) == math.inf  # ticks at the sync points only
    control.stop()
    assert not main.polled(control).pending  # the loop never drains it between sync points
    assert main.commands(control) == [("stop", None)]
    assert other.commands(control) == [("set_lr", 0.5)] and other.ctx.sent == [None]
    assert main.wait_command(Control()) == ("keepalive", None)  # nothing came within 5 s
    assert main.is_main and not other.is_main


# --- the run-folder writer -------------------------------------------------------------------


def read_toml(run: RunDir) -> dict:
    return tomllib.loads((run.path / "run.toml").read_text())


def test_writer_derives_run_toml_from_the_events(tmp_path):
    run = RunDir.create(tmp_path, "p", {"name": "p"}, "cpu")
    writer = RunWriter(run)
    writer(ev.Paused(step=3))
    assert read_toml(run)["run"]["status"] == "paused"
    writer(ev.HparamChanged(step=3, key="optim.lr", old=0.1, new=0.01))
    assert read_toml(run)["changes"] == [{"step": 3, "key": "optim.lr", "old": 0.1, "new": 0.01}]
    writer(ev.Resumed(step=3))
    assert read_toml(run)["run"]["status"] == "running"
    writer(ev.Finished(status="stopped", step=7, summary={"steps": 7}))
    meta = read_toml(run)
    assert meta["run"]["status"] == "stopped" and "ended" in meta["run"]
    assert meta["summary"] == {"steps": 7} and len(meta["changes"]) == 1
    writer.close()
    assert [e.type for e in run.read_events()] == ["paused", "hparam", "resumed", "finished"]


def test_writer_records_a_failure_with_its_reason(tmp_path):
    run = RunDir.create(tmp_path, "p", {"name": "p"}, "cpu")
    writer = RunWriter(run)
    writer(ev.Failed(step=2, reason="boom", summary={"steps": 2, "reason": "boom"}))
    writer.close()
    meta = read_toml(run)
    assert meta["run"]["status"] == "failed" and meta["summary"] == {"steps": 2, "reason": "boom"}
    old_line = {"type": "failed", "step": 2, "reason": "boom"}  # a log from before `summary`
    assert ev.event_from_dict(old_line) == ev.Failed(step=2, reason="boom")
