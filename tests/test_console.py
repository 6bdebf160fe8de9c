"""The headless printer: a line per epoch with its numbers, step lines that never repeat an
older epoch's numbers, and the headline numbers at the end."""

from __future__ import annotations

import io

from engine import events as ev
from engine.console import ConsolePrinter, clock


def started(**kw) -> ev.RunStarted:
    values = dict(run_id="r", preset="p", run_dir="d", device="cpu", task="classification",
                  total_steps=40, total_epochs=4, steps_per_epoch=10, batch_size=8,
                  lr=0.01)  # fmt: skip
    values.update(kw)
    return ev.RunStarted(**values)


def steps(first: int, n: int, epoch: int, loss: float = 0.5) -> ev.StepMetrics:
    return ev.StepMetrics(first_step=first, epoch=epoch, losses=(loss,) * n, lr=0.01,
                          elapsed_s=first / 10, samples_per_s=80.0, steps_per_s=10.0)  # fmt: skip


def epoch(n: int, val: float | None = 0.25, acc: float | None = 0.9) -> ev.EpochEnd:
    metrics = {"accuracy": acc} if acc is not None else {}
    return ev.EpochEnd(epoch=n, step=n * 10, train_loss=0.5 / n, val_loss=val, metrics=metrics)


def lines_of(printer_events, **kw) -> list[str]:
    out = io.StringIO()
    printer = ConsolePrinter(out, **kw)
    for event in printer_events:
        printer(event)
    return out.getvalue().splitlines()


def test_a_line_per_epoch_with_its_numbers():
    events = [started()]
    for n in range(1, 5):
        events += [steps((n - 1) * 10 + 1, 10, n, loss=1.0 / n), epoch(n, val=0.3 / n, acc=0.8)]
    summary = {"best_val_loss": 0.075, "test_accuracy": 0.8, "epoch_loss": 0.125, "duration_s": 4.0}
    events.append(ev.Finished("finished", 40, summary))
    lines = lines_of(events, every_s=0.0)
    epoch_lines = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(epoch_lines) == 4
    assert epoch_lines[1] == (
        "epoch 2/4  step 20  train_loss 0.25  val_loss 0.15  accuracy 0.8  lr 0.01  0:01"
    )
    assert "finished after 40 steps" in lines
    result = next(ln for ln in lines if ln.startswith("result: "))
    assert result == (
        "result: val_loss 0.075 (best 0.075)  test_accuracy 0.8000  train_loss 0.125  0:04"
    )


def test_step_lines_never_show_an_older_epochs_numbers():
    events = [started(), steps(1, 10, 1), epoch(1, val=0.123, acc=0.777), steps(11, 5, 2)]
    lines = lines_of(events, every_s=0.0)
    step_line = lines[-1]
    assert step_line.startswith("step 15/40  epoch 2/4  loss 0.5")
    assert "0.123" not in step_line and "0.777" not in step_line and "accuracy" not in step_line
    # the rate from the run's training time since the first flush: 5 steps in 1.0 s
    assert "5 steps/s  ETA 0:05" in step_line


def test_fast_epochs_are_rate_limited_but_the_last_one_shows():
    events = [started(total_epochs=100, total_steps=1000)]
    for n in range(1, 101):
        events += [steps((n - 1) * 10 + 1, 10, n), epoch(n, val=None, acc=None)]
    events.append(ev.Finished("finished", 1000, {"final_loss": 0.5}))
    lines = lines_of(events, every_s=3600.0)
    epoch_lines = [ln for ln in lines if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in epoch_lines] == ["1/100", "100/100"]
    assert "val_loss" not in epoch_lines[0]


def test_a_held_back_epoch_is_printed_at_the_end():
    events = [started(), steps(1, 10, 1), epoch(1), steps(11, 10, 2), epoch(2)]
    events.append(ev.Finished("stopped", 20, {}))
    lines = lines_of(events, every_s=3600.0)
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch ")] == ["1/4", "2/4"]
    assert lines.index("stopped after 20 steps") > [ln[:9] for ln in lines].index("epoch 2/4")


def test_lr_change_shows_in_the_next_epoch_line():
    events = [started(), steps(1, 10, 1), ev.HparamChanged(10, "optim.lr", 0.01, 0.002), epoch(1)]
    lines = lines_of(events, every_s=0.0)
    assert "step 10: optim.lr 0.01 -> 0.002" in lines and "lr 0.002" in lines[-1]


def test_write_hook_and_no_step_lines():
    got: list[str] = []
    printer = ConsolePrinter(write=got.append, step_lines=False, every_s=0.0)
    for event in (started(), steps(1, 10, 1), epoch(1)):
        printer(event)
    assert got[0].startswith("run r:") and got[1].startswith("epoch 1/4") and len(got) == 2


def test_clock():
    assert [clock(4), clock(751), clock(10931), clock(None)] == ["0:04", "12:31", "3:02:11", "-"]


def test_headless_train_prints_epoch_lines_and_the_result(runs_dir, cli):
    code, out, err = cli("train", "digits-cnn", "--set", "train.epochs=2", "--runs-dir",
                         str(runs_dir))  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    last_epoch = next(ln for ln in lines if ln.startswith("epoch 2/2 "))
    for word in ("train_loss", "val_loss", "accuracy", "lr 0.001"):
        assert word in last_epoch, (word, last_epoch)
    result = next(ln for ln in lines if ln.startswith("result: "))
    assert "val_loss" in result and "(best " in result and "test_accuracy 0." in result


def test_progress_bar_sink_prints_the_lines_above_the_bar():
    from tui.progress import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(out, force_terminal=True)
    events = [started()]
    for n in range(1, 5):
        events += [steps((n - 1) * 10 + 1, 10, n, loss=1.0 / n), epoch(n, val=0.3 / n)]
    events.append(ev.Finished("finished", 40, {"test_accuracy": 0.9, "best_val_loss": 0.075}))
    for event in events:
        bar(event)
    bar.close()  # idempotent: run_job closes the sink whatever happened
    text = out.getvalue()
    assert "40/40" in text and "loss 0.25" in text and "steps/s" in text
    assert "epoch 1/4  step 10  train_loss 0.5  val_loss 0.3" in text
    assert "finished after 40 steps" in text and "result: val_loss 0.075" in text
    assert "step 15/40" not in text  # no step lines: the bar is the progress


def test_train_on_a_terminal_shows_a_bar_and_off_it_plain_lines(runs_dir):
    import os
    import pty
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    args = [sys.executable, "-m", "tui.cli", "train", "kink", "--set", "train.epochs=50",
            "--runs-dir", str(runs_dir)]  # fmt: skip
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, cwd=root)
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "━" in text and "500/500" in text and "finished after 500 steps" in text
    plain = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "━" not in plain.stdout and "\r" not in plain.stdout
    assert "finished after 500 steps" in plain.stdout


def _flush(first: int, n: int, elapsed: float) -> ev.StepMetrics:
    # the engine's own figure is deliberately off: the printer measures from elapsed_s
    return ev.StepMetrics(first_step=first, epoch=1, losses=(0.5,) * n, lr=0.01,
                          elapsed_s=elapsed, samples_per_s=8.0, steps_per_s=1.0)


def test_rate_and_eta_leave_out_the_warm_up_and_pauses():
    events = [started(total_steps=10_000, total_epochs=1, steps_per_epoch=10_000),
              _flush(1, 3, 2.0)]  # the warm-up: 3 steps in 2 s
    lines = lines_of(events, every_s=0.0)
    assert lines[-1] == "step 3/10000  epoch 1/1  loss 0.5"  # no rate yet, no ETA 3:49:22
    events += [_flush(4, 1000, 3.0), ev.Paused(step=1003), ev.Resumed(step=1003),
               _flush(1004, 1000, 4.0)]  # the pause: training time stood still
    lines = lines_of(events, every_s=0.0)
    assert lines[-1] == "step 2003/10000  epoch 1/1  loss 0.5  1,000 steps/s  ETA 0:07"


def test_a_divergence_says_the_records_step_and_epoch():
    summary = {"steps": 29, "epochs": 2, "diverged_step": 29, "diverged_epoch": 3}
    lines = lines_of([started(total_epochs=2000, total_steps=20000), _flush(1, 28, 0.2),
                      ev.Finished("diverged", 29, summary)], every_s=0.0)
    assert "diverged at step 29, epoch 3/2000" in lines


def test_a_line_of_a_printer_fed_no_flushes_uses_the_runs_figure():
    printer = ConsolePrinter(write=lambda _: None)
    printer(started())
    line = printer.step_line(steps(11, 5, 2))
    assert "10 steps/s  ETA 0:02" in line  # `show` of a live run: its last event's figure


def test_progress_bar_rate_and_eta_leave_out_pauses():
    from tui.progress import ProgressBar

    bar = ProgressBar(io.StringIO(), force_terminal=True)
    for event in (started(total_steps=10_000, total_epochs=1, steps_per_epoch=10_000),
                  _flush(1, 3, 2.0), _flush(4, 1000, 3.0), ev.Paused(step=1003),
                  ev.Resumed(step=1003), _flush(1004, 1000, 4.0)):
        bar(event)
    fields = bar.progress.tasks[0].fields
    assert fields["rate"] == "1,000 steps/s" and fields["eta"] == "0:07"
    bar.close()
