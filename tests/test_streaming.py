"""The two data paths: resident on the device or streamed through a DataLoader. The same data
and order give the same losses on both; a streamed run stopped mid-epoch resumes exactly."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from engine.checkpoint import load_checkpoint
from engine.export import step_rows
from engine.rundir import RunDir
from helpers import losses, make_image_folder, train

CNN = [
    {"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "ReLU"},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "Flatten"},
    {"type": "Dropout", "p": 0.2},  # random in the model too: the data path must not move it
    {"type": "Linear", "in_features": 64, "out_features": 2},
]


def image_preset(root: Path, resident: Any, workers: int = 0, epochs: int = 2,
                 augment: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "name": "stream-images",
        "task": "classification",
        "data": {
            "source": "image_folder",
            "root": str(root),
            "image_size": 8,
            "resident": resident,
            "num_workers": workers,
            "augment": augment or [],
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
        },  # fmt: skip
        "model": {"layers": CNN},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {
            "epochs": epochs,
            "batch_size": 5,
            "loss": "cross_entropy",
            "device": "cpu",
            "log_every_s": 0.001,
        },  # fmt: skip
        "eval": {"every_epochs": 1, "batch_size": 7},
    }


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images", per_class=11, size=10)


def test_stream_and_resident_give_the_same_losses(images, tmp_path):
    aug = ["random_crop:2", "hflip"]
    ref, ref_events, _ = train(image_preset(images, True, augment=aug), tmp_path / "a")
    out, events, _ = train(image_preset(images, False, workers=2, augment=aug), tmp_path / "b")
    assert len(losses(events)) == 2 * 5  # 22 images, batches of 5
    assert losses(events) == losses(ref_events)
    assert out.summary["best_val_loss"] == ref.summary["best_val_loss"]
    assert out.summary["test_accuracy"] == ref.summary["test_accuracy"]
    plain = losses(train(image_preset(images, True), tmp_path / "c")[1])
    assert plain != losses(ref_events)  # augmentation did change the batches


def test_auto_streams_what_does_not_fit(images, monkeypatch):
    from engine.build import build_parts
    from engine.presets import resolve_config

    config = resolve_config(image_preset(images, "auto", workers=2), [])
    _, data, *_ = build_parts(config)
    assert data.path == "resident" and "resident on cpu" in data.summary
    assert data.x.shape == (22, 3, 8, 8)
    monkeypatch.setenv("TORCHDECK_RESIDENT_BYTES", "1000")  # 22 images of 3x8x8 floats: 16,896
    _, data, *_ = build_parts(config)
    assert data.path == "streaming" and data.steps_per_epoch == 5
    assert "streaming through a DataLoader (2 workers)" in data.summary
    assert data.x_test is None  # the test split does not fit either: streamed at evaluation
    assert sum(len(y) for _, y in data.eval_batches(4)) == 10
    first = [y for _, y in data.batches(0)]
    again = [y for _, y in data.batches(0, 2)]
    assert [t.tolist() for t in first[2:]] == [t.tolist() for t in again]
    assert data.state()["stream"] == {"epoch": 0, "fetched": 5, "seed": 0, "workers": 2}


# --- a Dataset that draws random numbers: exact whichever worker loads a batch -------------


class Jittered(Dataset):
    """Fixed points plus noise drawn in __getitem__ from torch's global generator."""

    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=gen)
        self.y = self.x @ torch.tensor([[1.0], [-1.0], [2.0]])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] + 0.01 * torch.randn(3), self.y[i]


def jittered(n: int = 60) -> Jittered:
    return Jittered(n)


def jitter_preset(workers: int) -> dict[str, Any]:
    return {
        "name": "stream-jitter",
        "task": "regression",
        "data": {
            "source": "factory",
            "factory": "tests.test_streaming:jittered",
            "resident": False,
            "num_workers": workers,
        },  # fmt: skip
        "model": {"layers": [{"type": "Linear", "in_features": 3, "out_features": 1}]},
        "optim": {"name": "adam", "lr": 0.05},
        "train": {
            "epochs": 3,
            "batch_size": 8,
            "loss": "mse",
            "device": "cpu",
            "log_every_s": 0.001,
        },  # fmt: skip
    }


def test_worker_randomness_does_not_depend_on_the_worker(tmp_path):
    one = losses(train(jitter_preset(0), tmp_path / "a")[1])
    two = losses(train(jitter_preset(2), tmp_path / "b")[1])
    assert len(one) == 3 * 8 and one == two


@pytest.mark.parametrize("which", ["images", "jitter"])
def test_streamed_run_stopped_mid_epoch_resumes_exactly(images, tmp_path, cli, which):
    from engine.api import run_sync
    from engine.control import Control
    from engine.presets import resolve_config

    preset = image_preset(images, False, workers=2, epochs=3, augment=["random_crop:1", "hflip"])
    if which == "jitter":
        preset = jitter_preset(2)
    _, ref_events, ref_run = train(preset, tmp_path / "ref")

    control = Control()
    seen: list = []

    def stop_at_step_7(event):
        """Stop after the first flush at step 7 or later that is not an epoch's end (the
        sink runs on the training thread, so the stop lands right after that step)."""
        seen.append(event)
        spe = seen[0].steps_per_epoch
        if event.type == "steps" and event.last_step >= 7 and event.last_step % spe:
            control.stop()

    runs = tmp_path / "stopped"
    stopped = run_sync(resolve_config(preset, []), runs, sinks=[stop_at_step_7], control=control)
    assert stopped.status == "stopped"
    run = Path(seen[0].run_dir)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    spe = seen[0].steps_per_epoch
    assert ckpt["step"] < 3 * spe and ckpt["batch"] == ckpt["step"] % spe > 0  # mid-epoch
    stream = ckpt["rng"]["data"]["stream"]  # the batch in hand when the stop came may be one more
    assert stream["epoch"] == ckpt["epoch"] and stream["fetched"] in (
        ckpt["batch"],
        ckpt["batch"] + 1,
    )

    code, _, err = cli("resume", run.name, "--runs-dir", str(runs))
    assert code == 0, err
    assert tomllib.loads((run / "run.toml").read_text())["run"]["status"] == "finished"
    assert [loss for *_, loss, _ in step_rows(RunDir(run))] == losses(ref_events)
    a = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(ref_run / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
