"""Bad input: one line naming the file or option and the problem, exit 2, no run left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.presets import BUILTIN_DIR

KINK = (BUILTIN_DIR / "kink.toml").read_text()


def broken(tmp_path: Path, text: str) -> str:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    return str(path)


def assert_one_clean_error(result, *needles: str, runs_dir: Path | None = None) -> None:
    code, out, err = result
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Traceback" not in out
    for needle in needles:
        assert needle in lines[0], lines[0]
    if runs_dir is not None:
        assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda t: t.replace("[optim]", "[optim"), ["TOML syntax error"]),
        (lambda t: t.replace("lr = 0.001", "lr = 0.001\nlrr = 1"), ["[optim] lrr", "unknown key"]),
        (
            lambda t: t.replace("batch_size = 2", 'batch_size = "two"'),
            ["[train] batch_size", "expected an integer", "'two'"],
        ),
        (
            lambda t: t[: t.index("[optim]")] + t[t.index("[train]") :],
            ["[optim]", "missing section"],
        ),
        (
            lambda t: t.replace('type = "ReLU"', 'type = "Relu"', 1),
            ["[model] layers[1].type", "unknown layer 'Relu'"],
        ),
        (lambda t: t.replace('loss = "half_mse"', 'loss = "huber"'), ["[train] loss", "huber"]),
        (lambda t: t.replace('name = "sgd"', 'name = "rmsprop"'), ["[optim] name", "rmsprop"]),
        (lambda t: t.replace("lr = 0.001", "lr = -0.001"), ["[optim] lr", "> 0"]),
        (lambda t: t.replace("batch_size = 2", "batch_size = 0"), ["[train] batch_size", ">= 1"]),
        (
            lambda t: t.replace(
                "in_features = 1, out_features = 1", "in_features = 3, out_features = 1", 1
            ),
            ["[model] does not fit the data"],
        ),
    ],
    ids=[
        "syntax",
        "unknown-key",
        "wrong-type",
        "missing-section",
        "unknown-layer",
        "unknown-loss",
        "unknown-optimiser",
        "negative-lr-in-file",
        "batch-zero-in-file",
        "shape-mismatch",
    ],
)
def test_broken_preset_file(tmp_path, cli, runs_dir, edit, needles):
    text = edit(KINK)
    assert text != KINK
    path = broken(tmp_path, text)
    result = cli("train", path, "--runs-dir", str(runs_dir))
    assert_one_clean_error(result, *needles, runs_dir=runs_dir)
    if "does not fit" not in needles[0]:
        assert path in result[2]


@pytest.mark.parametrize(
    "option, needles",
    [
        ("optim.lrr=0.1", ["--set optim.lrr=0.1", "unknown key", "lr, momentum"]),
        ("nosuch.key=1", ["--set nosuch.key=1", "unknown key"]),
        ("train.epochs=abc", ["--set train.epochs=abc", "expected an integer"]),
        ("train.epochs=2.5", ["--set train.epochs=2.5", "expected an integer"]),
        ("optim.lr=-0.1", ["--set optim.lr=-0.1", "expected a number > 0"]),
        ("train.batch_size=0", ["--set train.batch_size=0", ">= 1"]),
        ("train.seed", ["--set train.seed", "expected key=value"]),
        ("optim.momentum=yes", ["--set optim.momentum=yes", "expected a number"]),
    ],
)
def test_bad_set(cli, runs_dir, option, needles):
    result = cli("train", "kink", "--set", option, "--runs-dir", str(runs_dir))
    assert_one_clean_error(result, *needles, runs_dir=runs_dir)


def test_cuda_without_cuda(cli, runs_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("train", "kink", "--device", "cuda", "--runs-dir", str(runs_dir))
    assert_one_clean_error(result, "--device cuda", "CUDA is not available", runs_dir=runs_dir)


def test_missing_gpu_index(cli, runs_dir):
    result = cli("train", "kink", "--device", "cuda:7", "--runs-dir", str(runs_dir))
    assert_one_clean_error(result, "--device cuda:7", runs_dir=runs_dir)


def test_unknown_device_name(cli, runs_dir):
    result = cli("train", "kink", "--device", "tpu", "--runs-dir", str(runs_dir))
    assert_one_clean_error(result, "--device", "unknown device 'tpu'", runs_dir=runs_dir)


def test_runs_folder_under_a_file(tmp_path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli("train", "kink", "--runs-dir", str(blocker / "runs"))
    assert_one_clean_error(result, f"runs folder {blocker / 'runs'}", "Not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_runs_folder_read_only(tmp_path, cli):
    runs = tmp_path / "ro"
    runs.mkdir()
    runs.chmod(0o500)
    try:
        result = cli("train", "kink", "--runs-dir", str(runs))
        assert_one_clean_error(result, f"runs folder {runs}", "Permission denied", runs_dir=runs)
    finally:
        runs.chmod(0o700)


def test_unknown_preset(cli):
    assert_one_clean_error(cli("train", "nope"), "unknown preset 'nope'", "kink")


def test_unknown_run(cli, runs_dir):
    assert_one_clean_error(cli("show", "nope", "--runs-dir", str(runs_dir)), "no run 'nope'")


def test_real_process_exit_status_and_one_line(tmp_path):
    """The same through the installed command, as a user would run it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "train",
            "kink",
            "--set",
            "optim.lr=-1",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "torchdeck: --set optim.lr=-1: [optim] lr: expected a number > 0, got an integer -1"
    ]
    assert not (tmp_path / "runs").exists()
