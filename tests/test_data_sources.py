"""The user's own data: torchvision's classes on files in their on-disk formats, image folders,
CSV tables, tensor files and factories; each trains, and each bad input is one clean line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_cli_errors import assert_one_clean_error
from torch.utils.data import Dataset

from helpers import (
    make_cifar100_folder,
    make_cifar_folder,
    make_image_folder,
    make_mnist_folder,
    make_svhn_files,
    train,
)


def preset(
    data: dict[str, Any], layers: list[dict[str, Any]], task: str = "classification",
    epochs: int = 1, lr: float = 0.01, batch: int = 16, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    return {
        "name": f"own-{data['source']}",
        "task": task,
        "data": data,
        "model": {"layers": layers},
        "optim": {"name": "adam", "lr": lr},
        "train": {
            "epochs": epochs,
            "batch_size": batch,
            "loss": "cross_entropy" if task == "classification" else "mse",
            "device": "cpu",
        },
        **extra,
    }


def flat(n_in: int, n_out: int) -> list[dict[str, Any]]:
    return [{"type": "Flatten"}, {"type": "Linear", "in_features": n_in, "out_features": n_out}]


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    return path


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_linear_model_fits_its_coefficients(tmp_path, runs_dir):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 3))
    y = x @ np.array([2.0, -1.0, 0.5]) + 3.0
    rows = [
        [f"{a:.8f}", "ignored", f"{b:.8f}", f"{c:.8f}", f"{t:.8f}"]
        for (a, b, c), t in zip(x, y, strict=True)
    ]
    path = write_csv(tmp_path / "table.csv", ["a", "note", "b", "c", "y"], rows)
    data = {"source": "csv", "path": str(path), "target": "y", "features": ["a", "b", "c"]}
    config = preset(
        data, [{"type": "Linear", "in_features": 3, "out_features": 1}], task="regression",
        epochs=80, lr=0.05, report={"w": "p['0.weight']", "b": "p['0.bias']"},
    )  # fmt: skip
    result, _, _ = train(config, runs_dir)
    report = result.summary["report"]
    assert report["w"] == pytest.approx([2.0, -1.0, 0.5], abs=1e-3)
    assert report["b"] == pytest.approx(3.0, abs=1e-3)


def test_csv_string_labels_become_class_indices(tmp_path):
    from engine.build import build_parts
    from engine.presets import resolve_config

    rows = [[i, i % 3, ["setosa", "virginica", "versicolor"][i % 3]] for i in range(30)]
    path = write_csv(tmp_path / "flowers.csv", ["a", "b", "kind"], rows)
    data = {"source": "csv", "path": str(path), "target": "kind", "test_fraction": 0.2}
    config = resolve_config(preset(data, flat(2, 3)), [])
    _, d, *_ = build_parts(config)
    assert d.extras["classes"] == ["setosa", "versicolor", "virginica"]
    assert d.path == "resident" and d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert len(d.x) == 24 and len(d.x_test) == 6
    for x, y in zip(d.x.tolist(), d.y.tolist(), strict=True):
        assert d.extras["classes"][y] == ["setosa", "virginica", "versicolor"][int(x[0]) % 3]


# --- image folders -----------------------------------------------------------------------------


def test_image_folder_pngs_are_separated(tmp_path, runs_dir):
    root = make_image_folder(tmp_path / "images", per_class=24, size=12)
    data = {"source": "image_folder", "root": str(root), "image_size": 8, "channels": 1,
            "num_workers": 0}  # fmt: skip
    config = preset(data, flat(64, 2), epochs=30, lr=0.05, batch=8, eval={"every_epochs": 5})
    result, _, _ = train(config, runs_dir)
    assert result.status == "finished"
    assert result.summary["test_accuracy"] > 0.9


def test_image_folder_without_test_folder_splits_by_fraction(tmp_path):
    from engine.build import build_parts
    from engine.presets import resolve_config

    root = make_image_folder(tmp_path / "images", per_class=10, size=8, split=False)
    data = {"source": "image_folder", "root": str(root), "image_size": 8, "test_fraction": 0.25,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fmt: skip
    config = resolve_config(preset(data, flat(192, 2)), [])
    _, d, *_ = build_parts(config)
    assert (len(d.x), len(d.x_test)) == (15, 5)
    assert d.x.shape[1:] == (3, 8, 8) and d.extras["classes"] == ["dark", "light"]
    assert d.x.min() >= -2.0 - 1e-6 and d.x.max() <= 2.0 + 1e-6  # (v/255 - 0.5) / 0.25


# --- torchvision's classes on their own file formats ------------------------------------------


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "KMNIST"])
def test_mnist_format_folder_through_torchvision(tmp_path, runs_dir, name):
    root = make_mnist_folder(tmp_path / "data", name=name)
    data = {"source": "torchvision", "dataset": name, "root": str(root), "mean": [0.13],
            "std": [0.31]}  # fmt: skip
    result, events, _ = train(preset(data, flat(784, 10), eval={}), runs_dir)
    assert result.status == "finished"
    started = events[0]
    assert started.steps_per_epoch == 4  # 64 images, batches of 16
    assert "test_accuracy" in result.summary


def test_mnist_images_are_torchvisions_own(tmp_path):
    from torchvision.datasets import MNIST
    from torchvision.transforms import ToTensor

    from engine.build import build_parts
    from engine.presets import resolve_config

    root = make_mnist_folder(tmp_path / "data")
    config = resolve_config(
        preset({"source": "torchvision", "dataset": "MNIST", "root": str(root)}, flat(784, 10)), []
    )
    _, d, *_ = build_parts(config)
    ds = MNIST(str(root), train=True)
    for i in (0, 5, 63):
        img, label = ds[i]
        assert torch.equal(d.x[i], ToTensor()(img))  # the classic pipeline, bit for bit
        assert d.y[i].item() == label  # item-ok


def test_cifar10_and_cifar100_through_torchvision(tmp_path, runs_dir):
    make_cifar_folder(tmp_path / "data")
    make_cifar100_folder(tmp_path / "data")
    layers = flat(3072, 100)
    for name in ("CIFAR10", "CIFAR100"):
        data = {"source": "torchvision", "dataset": name, "root": str(tmp_path / "data"),
                "augment": ["random_crop:4", "hflip"]}  # fmt: skip
        result, _, _ = train(preset(data, layers), runs_dir)
        assert result.status == "finished", name


def test_svhn_mat_files_through_torchvision(tmp_path, runs_dir):
    pytest.importorskip("scipy")
    root = make_svhn_files(tmp_path / "data")
    data = {"source": "torchvision", "dataset": "SVHN", "root": str(root)}
    result, _, _ = train(preset(data, flat(3072, 10)), runs_dir)
    assert result.status == "finished"


# --- tensor files ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_tensor_files(tmp_path, runs_dir, suffix):
    gen = torch.Generator().manual_seed(0)
    x, xt = torch.randn(64, 4, generator=gen), torch.randn(16, 4, generator=gen)
    w = torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    arrays = {"x": x, "y": x @ w, "x_test": xt, "y_test": xt @ w}
    path = tmp_path / f"data{suffix}"
    if suffix == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in arrays.items()})
    else:
        torch.save(arrays, path)
    data = {"source": "tensors", "path": str(path)}
    config = preset(data, [{"type": "Linear", "in_features": 4, "out_features": 1}],
                    task="regression", epochs=40, lr=0.05, eval={"every_epochs": 40})  # fmt: skip
    result, _, _ = train(config, runs_dir)
    assert result.summary["best_val_loss"] < 1e-3


# --- factories ---------------------------------------------------------------------------------


class Rings(Dataset):
    """Points on two rings, one per class (a map-style Dataset a factory returns)."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (n,), generator=gen)
        angle = torch.rand(n, generator=gen) * 2 * math.pi
        radius = 1.0 + 2.0 * self.y
        self.x = torch.stack([radius * angle.cos(), radius * angle.sin()], 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def rings(n: int = 128) -> tuple[Dataset, Dataset]:
    return Rings(n, 0), Rings(64, 1)


def not_data() -> str:
    return "a string"


RING_MLP = [
    {"type": "Linear", "in_features": 2, "out_features": 16},
    {"type": "Tanh"},
    {"type": "Linear", "in_features": 16, "out_features": 2},
]


@pytest.mark.parametrize("resident", [True, False])
def test_factory_datasets(runs_dir, resident):
    data = {"source": "factory", "factory": "tests.test_data_sources:rings",
            "kwargs": {"n": 128}, "resident": resident, "num_workers": 0}  # fmt: skip
    config = preset(data, RING_MLP, epochs=30, lr=0.05, eval={"every_epochs": 30})
    result, events, _ = train(config, runs_dir)
    assert events[0].steps_per_epoch == 8
    assert result.summary["test_accuracy"] > 0.9


def test_wine_mlp_preset_learns(runs_dir):
    result, _, _ = train("wine-mlp", runs_dir)
    assert result.summary["test_accuracy"] > 0.9


# --- augmentation ------------------------------------------------------------------------------


def test_augment_is_per_sample_seeded_and_keeps_shapes():
    from engine.datasets import Augment

    x = torch.arange(4 * 3 * 6 * 6, dtype=torch.float32).reshape(4, 3, 6, 6).repeat(8, 1, 1, 1)
    aug = Augment(["random_crop:2", "hflip", "vflip:0.25"], seed=3)
    a, b = aug(x, 0, 5), aug(x, 0, 5)
    assert a.shape == x.shape and torch.equal(a, b)  # same (seed, epoch, batch): same result
    assert not torch.equal(a, aug(x, 0, 6)) and not torch.equal(a, aug(x, 1, 5))
    assert len({tuple(a[i].flatten().tolist()) for i in range(0, 32, 4)}) > 1  # per sample
    flips = Augment(["hflip:1.0"], seed=0)(x, 0, 0)
    assert torch.equal(flips, x.flip(-1))


# --- bad input: one line, exit 2, no run folder ------------------------------------------------


def write_preset(tmp_path: Path, data_toml: str, layers: str = '{ type = "Flatten" }') -> str:
    text = f"""
name = "bad-data"
task = "classification"
[data]
{data_toml}
[model]
layers = [{layers}, {{ type = "Linear", in_features = 4, out_features = 2 }}]
[optim]
name = "sgd"
lr = 0.1
[train]
epochs = 1
batch_size = 4
loss = "cross_entropy"
device = "cpu"
"""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return str(path)


def bad_cases(tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    table = write_csv(tmp_path / "t.csv", ["a", "b", "c", "d", "label"], [[1, 2, 3, 4, 0]] * 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    odd = tmp_path / "odd.npz"
    np.savez(odd, inputs=np.zeros((4, 4)))
    return {
        "missing-column": (
            f'source = "csv"\npath = "{table}"\ntarget = "kind"',
            ["[data] target", "no column 'kind'", "a, b, c, d, label"],
        ),
        "missing-feature": (
            f'source = "csv"\npath = "{table}"\ntarget = "label"\nfeatures = ["a", "zz"]',
            ["[data] features", "no column 'zz'"],
        ),
        "missing-csv": (
            f'source = "csv"\npath = "{tmp_path}/none.csv"\ntarget = "y"',
            ["[data] path", "no file"],
        ),
        "empty-image-folder": (
            f'source = "image_folder"\nroot = "{empty}"',
            ["[data] root", str(empty)],
        ),
        "no-image-folder": (
            f'source = "image_folder"\nroot = "{tmp_path}/nowhere"',
            ["[data] root", "no folder", "train/ and test/"],
        ),
        "unknown-dataset": (
            'source = "torchvision"\ndataset = "ImageNet"',
            ["[data] dataset", "expected one of", "MNIST", "'ImageNet'"],
        ),
        "missing-mnist": (
            f'source = "torchvision"\ndataset = "MNIST"\nroot = "{tmp_path}/nowhere"',
            ["[data] root", f"{tmp_path}/nowhere/MNIST/raw", "download=True"],
        ),
        "factory-wrong-type": (
            'source = "factory"\nfactory = "tests.test_data_sources:not_data"',
            ["[data] factory", "returned str", "Dataset"],
        ),
        "factory-no-module": (
            'source = "factory"\nfactory = "no_such_module_here:make"',
            ["[data] factory", "cannot import 'no_such_module_here'"],
        ),
        "tensors-wrong-keys": (
            f'source = "tensors"\npath = "{odd}"',
            ["[data] path", "keys x and y", "inputs"],
        ),
        "bad-augment": (
            f'source = "csv"\npath = "{table}"\ntarget = "label"\naugment = ["rotate:10"]',
            ["[data] augment", "unknown key"],
        ),
        "bad-augment-spec": (
            f'source = "image_folder"\nroot = "{empty}"\naugment = ["rotate:10"]',
            ["[data] augment", "random_crop:PAD", "'rotate:10'"],
        ),
        "bad-resident": (
            f'source = "csv"\npath = "{table}"\ntarget = "label"\nresident = "maybe"',
            ["[data] resident"],
        ),
        "bad-channels": (
            f'source = "image_folder"\nroot = "{empty}"\nchannels = 2',
            ["[data] channels", "1 (grey) or 3 (RGB)"],
        ),
    }


CASES = [
    "missing-column", "missing-feature", "missing-csv", "empty-image-folder", "no-image-folder",
    "unknown-dataset", "missing-mnist", "factory-wrong-type", "factory-no-module",
    "tensors-wrong-keys", "bad-augment", "bad-augment-spec", "bad-resident", "bad-channels",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_data_is_one_clean_line(tmp_path, cli, runs_dir, case):
    data_toml, needles = bad_cases(tmp_path)[case]
    path = write_preset(tmp_path, data_toml)
    result = cli("train", path, "--runs-dir", str(runs_dir))
    assert_one_clean_error(result, *needles, runs_dir=runs_dir)
