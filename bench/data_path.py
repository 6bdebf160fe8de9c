"""Data path: the resident path (the whole split on the device, prepared once) against the
streaming path (batches through a DataLoader), on the same data, model, seed and order.

Both train the same preset with only `data.resident` forced (true / false), one after the
other, interleaved rounds in one process (who goes first alternates; one warm-up run of
each first, not counted). Prints the training throughput of each (samples/s of
`Trainer.run`: the data's preparation at start is timed apart, as set-up), their ratio
streaming / resident (median over the rounds) and whether the final weights are bitwise
equal (same values, same order; a model with dropout also needs the same global RNG
stream). Cases, on data the bench writes into a temporary folder it deletes:

    digits-cnn sized   1 797 grey 8x8 images (scikit-learn's digits), the digits-cnn model,
                       batch 32: as a tensors file (.npz; streams from host memory) and as
                       a PNG image folder (ImageFolder; streams through DataLoader workers)
    CIFAR format       32x32x3 uint8 random images, the cifar10-cnn model, batch 64: as a
                       CIFAR-10 batch folder read by torchvision's CIFAR10 (python pickles)
                       and as a PNG image folder

Where CUDA is present, also bf16 and torch.compile against fp32 eager on the cifar10-cnn
preset (`train.precision`, `train.compile`; samples/s after the first epoch, so compile
time is left out), if engine/schema.py has those keys.

    .venv/bin/python bench/data_path.py [--rounds 3] [--quick] [--only digits|cifar|gpu]
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine import events as ev
from engine.build import prepare_run
from engine.presets import resolve_config
from engine.train.loop import Trainer

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]  # fmt: skip


# --- data the bench writes ---------------------------------------------------------------------


def write_png_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """root/<class>/<i>.png for (N, H, W) grey or (N, H, W, 3) RGB uint8 images."""
    from PIL import Image

    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"class{int(label):02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return root


def digits_data(tmp: Path) -> dict[str, dict[str, Any]]:
    """scikit-learn's digits as a tensors file and as a PNG folder: {case: [data] section}."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = (bunch.images * (255 / 16)).round().astype(np.uint8)  # (N, 8, 8), 0..255
    labels = bunch.target.astype(np.int64)
    npz = tmp / "digits.npz"
    np.savez(npz, x=pixels[:, None], y=labels)  # uint8 (N, 1, 8, 8): /255 on the way in
    folder = write_png_folder(tmp / "digits-png", pixels, labels)
    return {
        "tensors .npz": {"source": "tensors", "path": str(npz)},
        "PNG folder": {"source": "image_folder", "root": str(folder), "image_size": 8,
                       "channels": 1},  # fmt: skip
    }


def cifar_data(tmp: Path, n: int, n_test: int, png: bool = True) -> dict[str, dict[str, Any]]:
    """n random 32x32x3 images as a CIFAR-10 batch folder (n/5 a batch) and as a PNG folder."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def write(name: str, imgs: np.ndarray, labs: np.ndarray) -> None:
        entry = {
            "batch_label": name,
            "labels": [int(v) for v in labs],
            "data": imgs.transpose(0, 3, 1, 2).reshape(len(imgs), 3072),  # CIFAR's row layout
            "filenames": [f"{name}_{i}.png" for i in range(len(imgs))],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)

    for i, part in enumerate(np.array_split(np.arange(n), 5)):
        write(f"data_batch_{i + 1}", images[part], labels[part])
    write("test_batch", images[:n_test], labels[:n_test])
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": n // 5}, fh)
    norm = {"mean": [0.1307], "std": [0.3081]}  # the cifar10-cnn preset's (a kept quirk)
    out = {
        "CIFAR-10 batches (torchvision)": {"source": "torchvision", "dataset": "CIFAR10",
                                           "root": str(tmp / "cifar"), **norm},  # fmt: skip
    }
    if png:
        folder = write_png_folder(tmp / "cifar-png", images, labels)
        out["PNG folder"] = {"source": "image_folder", "root": str(folder), "image_size": 32,
                             "channels": 3, **norm}  # fmt: skip
    return out


# --- runs ------------------------------------------------------------------------------------


def config_for(preset: str, data: dict[str, Any], epochs: int, batch: int,
               device: str = "cpu", **train: Any) -> dict[str, Any]:  # fmt: skip
    """The preset's model and optimiser on `data`; no [eval], no report."""
    base = resolve_config(preset)
    raw = {k: base[k] for k in ("name", "title", "description", "task", "model", "optim")}
    raw["data"] = data
    raw["train"] = {"epochs": epochs, "batch_size": batch, "loss": "cross_entropy", "seed": 1,
                    "device": device, **train}  # fmt: skip
    return resolve_config(raw)


class Steps:
    """A sink keeping StepMetrics events (steady-state rates leave the first epoch out)."""

    def __init__(self) -> None:
        self.events: list[ev.StepMetrics] = []

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.StepMetrics):
            self.events.append(event)

    def rate_after(self, step: int, batch: int) -> float | None:
        """samples/s from the first report at or after `step` to the last one."""
        later = [e for e in self.events if e.last_step >= step]
        if len(later) < 2:
            return None
        a, b = later[0], later[-1]
        return (b.last_step - a.last_step) * batch / (b.elapsed_s - a.elapsed_s)


def train_once(config: dict[str, Any], sink: Steps | None = None) -> dict[str, Any]:
    """Set-up (prepare_run: data, model) and training (Trainer.run), timed apart."""
    with tempfile.TemporaryDirectory(prefix="torchdeck-bench-runs-") as runs:
        t = time.perf_counter()
        prep = prepare_run(config, runs)
        setup = time.perf_counter() - t
        trainer = Trainer(prep, sinks=[sink] if sink else [])
        t = time.perf_counter()
        end = trainer.run()
        wall = time.perf_counter() - t
        if getattr(end, "status", "finished") != "finished":
            raise SystemExit(f"run ended {end}")
        n = getattr(prep.data, "n", None) or len(prep.data.x)  # training samples an epoch
        return {
            "setup": setup,
            "rate": n * config["train"]["epochs"] / wall,
            "model": prep.model,
            "path": prep.data.path,
            "summary": prep.data.summary,
        }


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def compare_paths(name: str, make: Callable[[bool], dict[str, Any]], rounds: int) -> dict:
    ratios, res_rates, str_rates, res_setup, str_setup, equal = [], [], [], [], [], True
    for resident in (True, False):  # a warm-up of each, not counted (first-use costs)
        train_once(make(resident))
    for r in range(rounds):
        order = [True, False] if r % 2 == 0 else [False, True]
        got = {resident: train_once(make(resident)) for resident in order}
        res, stream = got[True], got[False]
        assert (res["path"], stream["path"]) == ("resident", "streaming"), (res, stream)
        if r == 0:
            print(f"  {name}: {res['summary']}\n  {name}: {stream['summary']}")
        equal &= same_weights(res["model"], stream["model"])
        ratios.append(stream["rate"] / res["rate"])
        res_rates.append(res["rate"])
        str_rates.append(stream["rate"])
        res_setup.append(res["setup"])
        str_setup.append(stream["setup"])
        print(f"  {name} round {r + 1}: resident {res['rate']:,.0f} samples/s, streaming "
              f"{stream['rate']:,.0f} samples/s, streaming/resident {ratios[-1]:.3f}; set-up "
              f"{res['setup']:.2f} s vs {stream['setup']:.2f} s", flush=True)  # fmt: skip
    med = statistics.median
    row = {
        "name": name, "ratio": med(ratios), "lo": min(ratios), "hi": max(ratios),
        "resident": med(res_rates), "streaming": med(str_rates), "rounds": rounds,
        "setup": (med(res_setup), med(str_setup)), "equal": equal,
    }  # fmt: skip
    print(f"{name}: streaming/resident = {row['ratio']:.3f} (median of {rounds}; min "
          f"{row['lo']:.3f}, max {row['hi']:.3f}); resident {row['resident']:,.0f} samples/s, "
          f"streaming {row['streaming']:,.0f} samples/s; set-up {row['setup'][0]:.2f} s vs "
          f"{row['setup'][1]:.2f} s; final weights bitwise equal: "
          f"{'yes' if equal else 'NO'}", flush=True)  # fmt: skip
    return row


# --- bf16 and compile on CUDA ------------------------------------------------------------------


def recipe_keys_missing() -> list[str]:
    from engine.schema import Train

    return [k for k in ("precision", "compile") if k not in Train.__struct_fields__]


def gpu_recipe(tmp: Path, rounds: int, n: int, batch: int, epochs: int,
               device: str = "cuda") -> list[dict]:  # fmt: skip
    if device == "cuda" and not torch.cuda.is_available():
        print("bf16 / compile vs fp32 eager: skipped (no CUDA on this machine)")
        return []
    missing = recipe_keys_missing()
    if missing:
        print(f"bf16 / compile vs fp32 eager: skipped (engine/schema.py has no "
              f"{', '.join('train.' + k for k in missing)} yet)")  # fmt: skip
        return []
    data = cifar_data(tmp / "gpu", n, 256, png=False)["CIFAR-10 batches (torchvision)"]
    data = {**data, "resident": True}
    fast_log = {"log_every_s": 0.05}  # enough step reports in a short run to time from
    variants = {
        "fp32 eager": {},
        "bf16": {"precision": "bf16"},
        "compile": {"compile": True},
        "bf16 + compile": {"precision": "bf16", "compile": True},
    }
    first = n // batch + 1  # steady state: after the first epoch (compile, warm-up)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    where = torch.cuda.get_device_name() if device == "cuda" else device
    print(f"\ncifar10-cnn on {where}, {n} CIFAR-format images resident, batch {batch}, "
          f"{epochs} epochs; samples/s after the first epoch:")  # fmt: skip
    for r in range(rounds):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            sink = Steps()
            config = config_for("cifar10-cnn", data, epochs, batch, device, **fast_log,
                                **variants[name])  # fmt: skip
            train_once(config, sink)
            rate = sink.rate_after(first, batch)
            if rate is not None:
                rates[name].append(rate)
        print("  round " + str(r + 1) + ": " + ", ".join(
            f"{k} {v[-1]:,.0f}" for k, v in rates.items() if v), flush=True)  # fmt: skip
    med = statistics.median
    if not rates["fp32 eager"]:
        print("cifar10-cnn: too few step reports to time from (make the runs longer)")
        return []
    base = med(rates["fp32 eager"])
    rows = []
    for name, got in rates.items():
        if name == "fp32 eager" or not got:
            continue
        ratio = med(got) / base
        rows.append({"name": name, "ratio": ratio, "rate": med(got), "base": base})
        print(f"cifar10-cnn on {device}: {name} / fp32 eager = {ratio:.3f} samples/s "
              f"({med(got):,.0f} vs {base:,.0f}; median of {len(got)})")  # fmt: skip
    return rows


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--only", choices=["digits", "cifar", "gpu"], help="run one part")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu")
    tmp = Path(tempfile.mkdtemp(prefix="torchdeck-bench-data-"))
    rows = []
    try:
        if args.only in (None, "digits"):
            epochs = 1 if args.quick else 3
            for name, data in digits_data(tmp).items():
                rows.append(compare_paths(
                    f"digits-cnn, digits as {name} (batch 32, {epochs} epochs)",
                    lambda resident, d=data: config_for(
                        "digits-cnn", {**d, "resident": resident}, epochs, 32),
                    args.rounds,
                ))  # fmt: skip
        if args.only in (None, "cifar"):
            n = 128 if args.quick else 256
            for name, data in cifar_data(tmp, n, 64).items():
                rows.append(compare_paths(
                    f"cifar10-cnn, {n} 32x32x3 images as {name} (batch 64, 1 epoch)",
                    lambda resident, d=data: config_for(
                        "cifar10-cnn", {**d, "resident": resident}, 1, 64),
                    args.rounds,
                ))  # fmt: skip
        if args.only in (None, "gpu"):
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp / "inductor"))  # ours
            n, batch, epochs = (4096, 128, 2) if args.quick else (20480, 128, 4)
            gpu_recipe(tmp, args.rounds, n, batch, epochs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if rows:
        print("\n| case | streaming / resident | rounds | samples/s | set-up | weights |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['name']} | **{row['ratio']:.3f}** | {row['rounds']}: "
                  f"{row['lo']:.3f}–{row['hi']:.3f} | {row['streaming']:,.0f} vs "
                  f"{row['resident']:,.0f} | {row['setup'][1]:.2f} s vs {row['setup'][0]:.2f} s "
                  f"| {'bitwise equal' if row['equal'] else 'DIFFER'} |")  # fmt: skip


if __name__ == "__main__":
    main()
