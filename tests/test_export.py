"""`torchdeck export`: steps or epochs, CSV or JSON Lines, streamed from the event log."""

from __future__ import annotations

import csv
import io
import json

from engine import events as ev
from engine.events import event_to_json
from engine.export import iter_epoch_rows, step_rows, write
from engine.rundir import RunDir


def started(start_step: int = 0, lr: float = 0.1) -> ev.RunStarted:
    return ev.RunStarted(run_id="r", preset="p", run_dir="d", device="cpu", task="classification",
                         total_steps=30, total_epochs=3, steps_per_epoch=10, batch_size=4,
                         start_step=start_step, start_epoch=start_step // 10, lr=lr)  # fmt: skip


def steps(first: int, losses: list[float], lr: float = 0.1) -> ev.StepMetrics:
    return ev.StepMetrics(first_step=first, epoch=(first - 1) // 10 + 1, losses=tuple(losses),
                          lr=lr, elapsed_s=first / 100, samples_per_s=1.0,
                          steps_per_s=1.0)  # fmt: skip


def epoch(n: int, val: float | None = None) -> ev.EpochEnd:
    metrics = {"accuracy": 0.5 + n / 10} if val is not None else {}
    return ev.EpochEnd(epoch=n, step=10 * n, train_loss=1.0 / n, val_loss=val, metrics=metrics)


def crashed_and_resumed(tmp_path) -> RunDir:
    """Steps 1..17 and epoch 1 logged, a crash, a resume from the checkpoint at step 12
    (steps 13..17 logged again, with other values), then to the end with an lr change."""
    log = [started(), steps(1, [1.0] * 7), steps(8, [0.9] * 3), epoch(1, 0.8),
           steps(11, [0.7] * 7),  # crashed after step 17
           started(start_step=12), steps(13, [0.6] * 8), epoch(2, 0.5),
           ev.HparamChanged(step=20, key="optim.lr", old=0.1, new=0.05),
           steps(21, [0.4] * 10, lr=0.05), epoch(3, 0.3)]  # fmt: skip
    path = tmp_path / "run"
    path.mkdir()
    text = "".join(event_to_json(e) + "\n" for e in log) + '{"type": "steps", "fir'  # torn
    (path / "events.jsonl").write_text(text)
    return RunDir(path)


def test_step_rows_keep_the_relogged_steps(tmp_path):
    rows = step_rows(crashed_and_resumed(tmp_path))
    assert [r[0] for r in rows] == list(range(1, 31))
    assert [r[2] for r in rows[10:20]] == [0.7, 0.7] + [0.6] * 8  # 13..17 replaced
    assert [r[1] for r in rows] == [1] * 10 + [2] * 10 + [3] * 10
    assert rows[-1][3] == 0.05 and rows[0][3] == 0.1


def test_epoch_rows(tmp_path):
    rows = list(iter_epoch_rows(crashed_and_resumed(tmp_path)))
    assert [(r["epoch"], r["step"], r["val_loss"]) for r in rows] == [
        (1, 10, 0.8), (2, 20, 0.5), (3, 30, 0.3)
    ]  # fmt: skip
    assert rows[2]["accuracy"] == 0.8 and rows[1]["lr"] == 0.1 and rows[2]["lr"] == 0.05
    assert list(rows[0]) == ["epoch", "step", "train_loss", "val_loss", "accuracy", "lr",
                             "elapsed_s"]  # fmt: skip


def test_an_epoch_logged_before_a_crash_and_again_after_counts_once(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    log = [started(), steps(1, [1.0] * 12), epoch(1), started(start_step=5), steps(6, [0.5] * 7),
           epoch(1)]  # fmt: skip
    (path / "events.jsonl").write_text("".join(event_to_json(e) + "\n" for e in log))
    rows = list(iter_epoch_rows(RunDir(path)))
    assert [r["epoch"] for r in rows] == [1]
    assert [r[2] for r in step_rows(RunDir(path))] == [1.0] * 5 + [0.5] * 7


def test_csv_and_json_formats(tmp_path):
    run = crashed_and_resumed(tmp_path)
    out = io.StringIO()
    assert write(run, out, "csv", epochs=True) == 3
    table = list(csv.reader(io.StringIO(out.getvalue())))
    assert table[0] == ["epoch", "step", "train_loss", "val_loss", "accuracy", "lr", "elapsed_s"]
    assert table[1][:4] == ["1", "10", "1.0", "0.8"]
    out = io.StringIO()
    assert write(run, out, "json") == 30
    first = json.loads(out.getvalue().splitlines()[0])
    assert first == {"step": 1, "epoch": 1, "loss": 1.0, "lr": 0.1}


def test_export_streams_the_log(tmp_path, monkeypatch):
    def whole_log(self):
        raise AssertionError("export must not read the whole log into memory")

    monkeypatch.setattr(RunDir, "read_events", whole_log)
    assert write(crashed_and_resumed(tmp_path), io.StringIO(), "json") == 30


def test_export_command(runs_dir, cli, tmp_path):
    code, _, err = cli("train", "digits-cnn", "--set", "train.epochs=2", "--runs-dir",
                       str(runs_dir))  # fmt: skip
    assert code == 0, err
    rid = next(runs_dir.iterdir()).name
    code, out, err = cli("export", rid, "--json", "--epochs", "--runs-dir", str(runs_dir))
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and 0 < rows[1]["accuracy"] <= 1
    assert rows[1]["val_loss"] > 0 and rows[1]["lr"] == 0.001 and rows[1]["step"] == 90
    target = tmp_path / "epochs.csv"
    code, out, err = cli("export", rid, "--csv", "--epochs", "-o", str(target), "--runs-dir",
                         str(runs_dir))  # fmt: skip
    assert code == 0 and out == f"2 epochs -> {target}\n"
    assert target.read_text().splitlines()[0].startswith("epoch,step,train_loss,val_loss")
    code, out, err = cli("export", rid, "--csv", "--runs-dir", str(runs_dir))
    assert code == 0 and out.splitlines()[0] == "step,epoch,loss,lr" and len(out.splitlines()) == 91


def test_export_needs_a_format(cli, capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_:
        cli("export", "some-run")
    assert exit_.value.code == 2 and "--csv --json is required" in capsys.readouterr().err
