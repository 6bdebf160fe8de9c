"""The per-rank view of a distributed run: ranks.json (engine/ranks.py), its flags, the table
in `torchdeck show` and the app's rank pane; a straggler made on purpose is flagged."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

from dist_helpers import ROOT, Launched, logged_steps, only_run, wait_for

from engine.ranks import RankRow, RankView, flag_ranks, format_table, read_ranks, write_ranks

NOW = 1_800_000_000.0


def _row(rank: int, **kw) -> RankRow:
    base = dict(host="h", pid=100 + rank, step=400, samples_per_s=900.0, step_ms=17.0,
                forward_ms=2.0, memory_mb=300.0, heartbeat=NOW - 0.5)  # fmt: skip
    return RankRow(rank=rank, **{**base, **kw})


def test_even_ranks_are_not_flagged():
    rows = [_row(0), _row(1, forward_ms=2.4), _row(2, forward_ms=1.8, step=399)]
    assert flag_ranks(rows, NOW) == {}


def test_a_slow_rank_is_a_straggler_and_a_silent_one_hangs():
    rows = [_row(0), _row(1, forward_ms=31.0), _row(2), _row(3, step=300)]
    flags = flag_ranks(rows, NOW)
    assert set(flags) == {1, 3}
    assert flags[1].startswith("straggler: 0.06x the others' speed")
    assert flags[3] == "straggler: 100 steps behind"
    silent = [_row(0, heartbeat=NOW - 40), _row(1, heartbeat=NOW - 40)]
    assert flag_ranks(silent, NOW) == {
        0: "hang: no heartbeat for 40 s",
        1: "hang: no heartbeat for 40 s",
    }


def test_a_slow_run_is_given_time_between_heartbeats():
    """2 s a step: 40 s between two collective points, so 60 s of silence is not a hang."""
    rows = [
        _row(0, step_ms=2000.0, heartbeat=NOW - 60),
        _row(1, step_ms=2000.0, heartbeat=NOW - 60),
    ]
    assert flag_ranks(rows, NOW) == {}
    assert set(flag_ranks(rows, NOW + 70)) == {0, 1}


def test_ranks_file_round_trip_and_table(tmp_path):
    rows = [{"rank": r, "host": "box", "pid": 7 + r, "step": 60, "samples_per_s": 1200.0,
             "step_ms": 13.3, "forward_ms": 1.1 + 30 * r, "memory_mb": 512.0,
             "memory_kind": "rss", "heartbeat": NOW - 1} for r in range(2)]  # fmt: skip
    write_ranks(tmp_path, rows, NOW - 1)
    view = read_ranks(tmp_path, live=True, now=NOW)
    assert isinstance(view, RankView) and view.world == 2 and set(view.flags) == {1}
    assert read_ranks(tmp_path, live=False, now=NOW).flags == {}  # an ended run is not flagged
    lines = format_table(view, NOW)
    assert lines[0].split() == ["rank", "host", "step", "samples/s", "ms/step", "fwd",
                                "ms", "memory", "heartbeat"]  # fmt: skip
    assert lines[1].split()[:3] == ["0", "box", "60"] and "1.0 s ago" in lines[1]
    assert "straggler" in lines[2] and "straggler" not in lines[1]
    (tmp_path / "ranks.json").write_text('{"written": 1, "ranks": [{"rank"')  # torn
    assert read_ranks(tmp_path) is None
    assert read_ranks(tmp_path / "nothing") is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


SLOW_PRESET = """
name = "slow-rank"
title = "digits, with rank 1 sleeping in its forward pass"
task = "classification"

[data]
source = "digits"
image = true

[model]
factory = "tests.dist_models:slow_on_rank"
kwargs = { sleep_s = 0.04, rank = 1 }

[optim]
name = "adam"
lr = 0.001

[train]
epochs = 500
batch_size = 32
loss = "cross_entropy"
seed = 0
"""


def test_a_rank_slowed_on_purpose_is_flagged_in_show_and_in_the_app(tmp_path):
    from tui.app import make_app
    from tui.panes.ranks import RanksPane

    preset = tmp_path / "slow-rank.toml"
    preset.write_text(SLOW_PRESET)
    runs = tmp_path / "runs"
    run = Launched(["train", str(preset), "--nproc", "2", "--runs-dir", str(runs)],
                   tmp_path / "out")  # fmt: skip
    try:
        wait_for(lambda: logged_steps(runs) >= 40, 240, "the first logged steps")
        folder = only_run(runs)

        def flagged():
            view = read_ranks(folder, live=True)
            return view is not None and 1 in view.flags and view

        view = wait_for(flagged, 60, "rank 1 to be flagged")
        assert view.world == 2 and 0 not in view.flags, view
        assert view.flags[1].startswith("straggler"), view.flags
        assert all(r.step > 0 and r.memory_mb > 0 and r.host for r in view.rows)
        raw = json.loads((folder / "ranks.json").read_text())
        assert [r["rank"] for r in raw["ranks"]] == [0, 1]

        show = subprocess.run([sys.executable, "-m", "tui.cli", "show", folder.name,
                               "--runs-dir", str(runs)], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert show.returncode == 0, show.stderr
        lines = show.stdout.splitlines()
        at = lines.index("ranks (2 processes):")
        assert lines[at + 2].split()[0] == "0" and "straggler" not in lines[at + 2]
        assert lines[at + 3].split()[0] == "1" and "straggler" in lines[at + 3]

        async def app_view():
            app = make_app(runs_dir=runs, attach=folder, background_delay_s=0)
            async with app.run_test(size=(120, 40)) as pilot:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    pane = app.screen.query_one(RanksPane)
                    if pane.display and pane.view is not None and 1 in pane.view.flags:
                        text = str(pane.render())
                        await pilot.press("k")  # hidden on demand
                        hidden = not pane.display
                        await pilot.press("k")
                        return text, hidden, pane.display
                    await pilot.pause(0.2)
            raise AssertionError("the app never showed a flagged rank")

        text, hidden, shown_again = asyncio.run(app_view())
        assert "straggler" in text and hidden and shown_again
        run.signal(signal.SIGINT)
        assert run.wait(timeout=120) == 0, run.err()[-3000:]
    finally:
        run.end()
