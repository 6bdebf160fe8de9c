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
