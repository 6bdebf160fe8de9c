"""The bounded series behind the plots, and the event-following logic (no terminal needed)."""

from __future__ import annotations

import math

from engine import events as ev
from engine.schema import validate
from tui.panes.loss_plot import LossModel
from tui.run_state import Follower
from tui.series import DecimatedSeries, RecentWindow, downsample, smooth
from tui_fakes import FAKE_PRESETS, fake_events


def test_decimated_series_stays_bounded_and_keeps_mean_min_max():
    s = DecimatedSeries(capacity=8)
    s.extend(1, [float(i) for i in range(1, 1001)])
    assert len(s) <= 8 and s.total == 1000
    xs, ys = s.points()
    assert xs == sorted(xs)
    # every bucket's mean equals the mean of its x (since y == x here)
    assert all(abs(x - y) < 1e-9 for x, y in zip(xs, ys, strict=True))
    _, lo, hi = s.envelope()
    assert lo[0] == 1.0 and hi[-1] == 1000.0
    assert abs(sum(ys[:-1]) / len(ys[:-1]) - sum(range(1, 1 + s.width * (len(s) - 1)))
               / (s.width * (len(s) - 1))) < 1e-6


def test_decimated_series_skips_non_finite_values():
    s = DecimatedSeries(capacity=4)
    s.extend(1, [1.0, math.nan, 3.0, math.inf, 5.0])
    _, ys = s.points()
    assert all(math.isfinite(y) for y in ys)


def test_recent_window_keeps_the_tail():
    w = RecentWindow(size=5)
    w.extend(1, [float(i) for i in range(1, 101)])
    assert w.points() == ([96, 97, 98, 99, 100], [96.0, 97.0, 98.0, 99.0, 100.0])
    w.extend(101, [101.0])
    assert w.points()[0][0] == 97


def test_downsample_and_smooth():
    xs, ys = downsample(list(range(100)), [1.0] * 100, 10)
    assert len(xs) == 10 and ys == [1.0] * 10
    assert smooth([1.0, 1.0, 1.0], 0.9) == [1.0, 1.0, 1.0]  # bias-corrected
    assert smooth([0.0, 10.0], 0.0) == [0.0, 10.0]


def test_loss_model_render_size_is_fixed_by_the_widget_not_the_run():
    model = LossModel()
    model.add_losses(1, tuple(1.0 / (i + 1) for i in range(100_000)))
    text = model.render(60, 15)
    lines = text.plain.split("\n")
    assert len(lines) == 15 and max(len(line) for line in lines) <= 60
    model.log_y = True
    assert model.render(60, 15).plain != text.plain


def test_follower_coalesces_and_tracks_state():
    config = validate(FAKE_PRESETS["line"])
    follower = Follower(clock=lambda: 50.0)
    follower.reset()
    events = fake_events("/tmp/run", config)
    events.insert(3, ev.ParamStats(step=1, params=()))  # an older one: superseded
    up = follower.apply(events)
    run = follower.run
    assert run.state == "running" and run.step == 400 and run.total_steps == 500
    assert sum(len(losses) for _, losses in up.losses) == 400
    assert up.params.step == 400 and up.fit is not None and up.state_changed
    assert run.last_checkpoint_t == 50.0 and run.eta_s == 1.0
    up = follower.apply([ev.Paused(step=400)])
    assert run.state == "paused" and run.eta_s is None
    up = follower.apply([ev.Failed(step=400, reason="boom")])
    assert run.state == "failed" and run.reason == "boom" and up.ended is not None
    assert not run.active
