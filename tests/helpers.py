"""Shared test helpers: in-process training and CLI calls, a CIFAR-format folder."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from engine.events import Event

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def train(preset: str | dict, runs_dir: Path, *sets: str) -> tuple[Event, list[Event], Path]:
    """Run a preset to the end in this process; returns (last event, all events, run dir)."""
    from engine.api import run_sync
    from engine.presets import resolve_config

    seen: list[Event] = []
    config = resolve_config(preset, list(sets))
    result = run_sync(config, runs_dir, sinks=[seen.append])
    run_dir = Path(seen[0].run_dir)
    return result, seen, run_dir


def losses(events: list[Event]) -> list[float]:
    out: list[float] = []
    for e in events:
        if e.type == "steps":
            assert e.first_step == len(out) + 1
            out.extend(e.losses)
    return out


def make_cifar_folder(root: Path, per_batch: int = 16, test: int = 20, seed: int = 0) -> Path:
    """A small folder in CIFAR-10's on-disk format (python pickles) that torchvision reads."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, n: int) -> None:
        entry: dict[str, Any] = {
            "batch_label": name,
            "labels": [int(v) for v in rng.integers(0, 10, n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)

    for i in range(1, 6):
        write(f"data_batch_{i}", per_batch)
    write("test_batch", test)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": per_batch}, fh)
    return root


def make_mnist_folder(root: Path, name: str = "MNIST", train: int = 64, test: int = 32,
                      seed: int = 0) -> Path:  # fmt: skip
    """idx files (uncompressed) under root/<name>/raw, as torchvision's MNIST classes read them.

    Each label's image is a bright square at a place the label fixes, plus noise."""
    rng = np.random.default_rng(seed)
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    def write(prefix: str, n: int) -> None:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 5)
            images[i, 4 + r * 12 : 10 + r * 12, 1 + c * 5 : 5 + c * 5] = 255
        with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as fh:
            fh.write(np.array([0x803, n, 28, 28], dtype=">i4").tobytes() + images.tobytes())
        with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as fh:
            fh.write(np.array([0x801, n], dtype=">i4").tobytes() + labels.tobytes())

    write("train", train)
    write("t10k", test)
    return root


def make_cifar100_folder(root: Path, train: int = 40, test: int = 20, seed: int = 0) -> Path:
    """cifar-100-python/{train,test,meta} pickles, as torchvision's CIFAR100 reads them."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        entry = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": [int(v) for v in rng.integers(0, 100, n)],
            "coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, fh)
    return root


def make_svhn_files(root: Path, train: int = 30, test: int = 20, seed: int = 0) -> Path:
    """train_32x32.mat and test_32x32.mat (scipy.io.savemat), as torchvision's SVHN reads them."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)  # SVHN's 10 stands for 0
        savemat(root / f"{name}_32x32.mat", {"X": x, "y": y})
    return root


def make_image_folder(
    root: Path, per_class: int = 12, size: int = 12, split: bool = True, seed: int = 0,
    classes: tuple[str, ...] = ("dark", "light"),
) -> Path:  # fmt: skip
    """PNGs a small classifier separates: class k's images are bright in a band k fixes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    parts = ("train", "test") if split else ("",)
    for part in parts:
        for k, name in enumerate(classes):
            folder = root / part / name if part else root / name
            folder.mkdir(parents=True, exist_ok=True)
            n = per_class if part != "test" else max(per_class // 2, 2)
            for i in range(n):
                img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                band = size // len(classes)
                img[k * band : (k + 1) * band] = rng.integers(180, 256, (band, size, 3))
                Image.fromarray(img).save(folder / f"{i}.png")
    return root
