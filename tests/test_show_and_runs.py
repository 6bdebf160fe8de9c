"""`torchdeck presets`, `runs` and `show` print what a user needs."""

from __future__ import annotations

import tomllib

from engine.presets import discover_presets

SEED_PRESETS = [
    "kink", "neuron-linear", "neuron-relu", "neuron-leaky", "neuron-bias", "neuron-2in",
    "neuron-layer", "neuron-mlp", "dense-relu", "simplenet-digits", "cifar10-cnn", "blobs-line",
    "legendre-sin", "digits-cnn",
]  # fmt: skip


def test_presets_lists_every_preset_with_title_and_task(cli):
    code, out, _ = cli("presets")
    assert code == 0
    infos = {p.name: p for p in discover_presets()}
    assert set(SEED_PRESETS) <= set(infos)
    for name in SEED_PRESETS:
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert infos[name].title in line and infos[name].task in line
        assert infos[name].error is None


def test_broken_user_preset_is_listed_not_fatal(tmp_path, cli):
    (tmp_path / "oops.toml").write_text("name = 'oops'\n[data\n")
    code, out, _ = cli("--presets", str(tmp_path), "presets")
    assert code == 0
    assert "BROKEN" in out and "oops" in out and "kink" in out
    table, broken = out.split("\nbroken presets:\n")
    error = next(p for p in discover_presets([tmp_path]) if p.name == "oops").error
    assert error[-25:] not in table  # no row padded to the longest error
    assert broken.startswith("  oops: ") and error[-25:] in broken and "oops.toml" in broken


def test_show_prints_the_config_and_changes(runs_dir, cli):
    cli("train", "neuron-linear", "--set", "optim.lr=0.05", "--runs-dir", str(runs_dir))
    code, out, _ = cli("show", next(runs_dir.iterdir()).name, "--runs-dir", str(runs_dir))
    assert code == 0
    config = out.split("config (the resolved preset):\n", 1)[1]
    assert '  name = "neuron-linear"' in config and "  lr = 0.05" in config
    assert "live changes: none" in out


def test_show_prints_summary_and_every_parameter(runs_dir, cli):
    code, out, _ = cli("train", "neuron-layer", "--runs-dir", str(runs_dir))
    assert code == 0
    run = next(runs_dir.iterdir())
    meta = tomllib.loads((run / "run.toml").read_text())
    code, out, _ = cli("show", run.name, "--runs-dir", str(runs_dir))
    assert code == 0
    assert "status: finished" in out and "final_loss:" in out and "steps: 100" in out
    import torch

    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name, t in state.items():
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        for v in t.flatten().tolist():  # small tensors: every value in full
            assert repr(float(v)) in line
    assert meta["summary"]["steps"] == 100


def test_show_summarises_big_tensors(runs_dir, cli):
    cli("train", "simplenet-digits", "--set", "train.epochs=1", "--runs-dir", str(runs_dir))
    run = next(runs_dir.iterdir())
    code, out, _ = cli("show", str(run))  # a path works too
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("0.weight "))
    assert "128x64" in line and "mean" in line and "std" in line
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("4.bias "))
    assert line.split(": ", 1)[1].count(",") == 9  # 10 values in full


def test_runs_table(runs_dir, cli):
    cli("train", "neuron-linear", "--runs-dir", str(runs_dir))
    (runs_dir / "not-a-run").mkdir()
    code, out, _ = cli("runs", "--runs-dir", str(runs_dir))
    assert code == 0
    assert "finished" in out and "neuron-linear" in out and "damaged" in out
    cli("train", "digits-cnn", "--set", "train.epochs=1", "--runs-dir", str(runs_dir))
    code, out, _ = cli("runs", "--runs-dir", str(runs_dir))
    header, *rows = out.splitlines()
    assert header.split() == ["id", "status", "preset", "started", "steps", "final_loss",
                              "best_val_loss", "test_acc"]  # fmt: skip
    runs = [row.split()[0] for row in rows]
    assert runs == sorted(runs, reverse=True)  # newest first, as the app
    digits = next(row for row in rows if "digits-cnn" in row)
    acc = tomllib.loads((runs_dir / digits.split()[0] / "run.toml").read_text())["summary"]
    assert digits.split()[-1] == f"{acc['test_accuracy']:.4f}"


def test_run_toml_contents(runs_dir):
    from helpers import train

    result, _, run = train("digits-cnn", runs_dir, "train.epochs=1")
    meta = tomllib.loads((run / "run.toml").read_text())
    info = meta["run"]
    assert info["status"] == "finished" and info["preset"] == "digits-cnn"
    assert info["id"] == run.name and info["device"] == "cpu"
    assert {"started", "ended", "host"} <= set(info) and "torch" in info["versions"]
    assert meta["config"]["train"]["epochs"] == 1 and "steps" not in meta["config"]["train"]
    summary = meta["summary"]
    for key in (
        "final_loss",
        "epoch_loss",
        "best_val_loss",
        "test_accuracy",
        "steps",
        "epochs",
        "duration_s",
        "samples_per_s",
    ):
        assert key in summary, key
    assert summary == {k: v for k, v in result.summary.items()}


def test_torn_event_line_is_ignored(runs_dir):
    from engine.rundir import RunDir
    from helpers import train

    _, events, run = train("neuron-linear", runs_dir)
    with open(run / "events.jsonl", "a") as fh:
        fh.write('{"type": "steps", "first_step": 101, "ep')
    again = RunDir(run).read_events()
    assert again == events
