"""The user's own data: torchvision's dataset classes, image folders, CSV tables, tensor files
and `module:function` factories; held resident on the device or streamed through a DataLoader.

Every source gives a training Dataset of raw samples (uint8 images as they are on disk, or
numbers) and optionally a test Dataset. One `Prepare` turns a raw batch into model input
(uint8 -> float / 255, then the normalisation), the same elementwise operations whether it
runs once over the whole split (resident) or on every batch (streaming), so both paths give
the same values. Which path a run takes depends on the size: `data.resident = "auto"` keeps
the data on the device when it takes at most a quarter of the free memory (half of the free
GPU memory on CUDA).

Streaming draws the same order as the resident path (a permutation seeded from (seed,
epoch)); a DataLoader's workers fetch whole batches, each under a seed made from (seed,
epoch, batch), so the random numbers a dataset draws do not depend on which worker loads a
batch, and a run resumed in the middle of an epoch gets the same batches.

Augmentation (`data.augment`) runs on batches on the device, with torchvision.transforms.v2's
functional ops and per-sample parameters drawn from a generator seeded from (seed, epoch,
batch), for either path.
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate

from engine.data import DTYPES, TensorData, epoch_seed
from engine.errors import DataError
from engine.user_code import import_user_module

RESIDENT_FRACTION = 0.25  # of the available host memory (CPU, MPS)
RESIDENT_FRACTION_CUDA = 0.5  # of the free device memory
BUDGET_ENV = "TORCHDECK_RESIDENT_BYTES"  # overrides the budget (tests, benchmarks)
SAMPLE_ROWS = 256  # what `StreamData.x` holds: a sample of the data (checks, diagnosis)


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    return (epoch_seed(seed, epoch) * 1_000_033 + batch) % (2**63)


# --- raw -> model input ----------------------------------------------------------------------


@dataclass
class Prepare:
    """Raw batch -> model input: uint8 images to float in [0, 1], normalised; numbers cast."""

    dtype: torch.dtype
    task: str
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    def x(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div(255)
            if self.mean:
                shape = (-1,) + (1,) * (x.dim() - 2)
                mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device)
                std = torch.tensor(self.std, dtype=torch.float32, device=x.device)
                x = x.sub_(mean.reshape(shape)).div_(std.reshape(shape))
        if not x.is_floating_point():
            x = x.to(torch.float32)
        return x.to(self.dtype)

    def y(self, y: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return y.long().reshape(-1)
        y = y.to(self.dtype)
        return y.reshape(-1, 1) if y.dim() == 1 else y


# --- augmentation on batches -----------------------------------------------------------------

AUGMENT_OPS = ("hflip", "vflip", "random_crop")
AUGMENT_PATTERN = re.compile(r"^(hflip|vflip)(:(0(\.\d+)?|1(\.0*)?))?$|^random_crop:[1-9]\d*$")


class Augment:
    """`data.augment`, e.g. ["random_crop:4", "hflip"]: per-sample, on (N, C, H, W) batches.

    hflip[:p] / vflip[:p]: flip each image with probability p (0.5); random_crop:P: pad each
    side by P (zeros, after normalisation) and crop back to the size at a random offset.
    """

    def __init__(self, specs: list[str], seed: int) -> None:
        self.specs = list(specs)
        self.seed = seed
        self.ops: list[tuple[str, float]] = []
        for spec in specs:
            name, _, arg = spec.partition(":")
            if name in ("hflip", "vflip"):
                self.ops.append((name, float(arg) if arg else 0.5))
            else:
                self.ops.append((name, int(arg)))

    def __call__(self, x: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        gen = torch.Generator().manual_seed(batch_seed(self.seed ^ 0x5EED, epoch, batch))
        n = len(x)
        for name, arg in self.ops:
            if name in ("hflip", "vflip"):
                mask = (torch.rand(n, generator=gen) < arg).to(x.device).reshape(-1, 1, 1, 1)
                flipped = F.horizontal_flip(x) if name == "hflip" else F.vertical_flip(x)
                x = torch.where(mask, flipped, x)
            else:
                pad = int(arg)
                h, w = x.shape[-2:]
                padded = F.pad(x, [pad])
                dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
                dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
                c, wide = x.shape[1], padded.shape[-1]
                rows = (dy[:, None] + torch.arange(h, device=x.device)).reshape(n, 1, h, 1)
                cols = (dx[:, None] + torch.arange(w, device=x.device)).reshape(n, 1, 1, w)
                x = padded.gather(2, rows.expand(n, c, h, wide))
                x = x.gather(3, cols.expand(n, c, h, w))
        return x


# --- the two paths ---------------------------------------------------------------------------


@dataclass
class ResidentData(TensorData):
    """The whole split on the device, prepared once; augmentation per batch."""

    augment: Augment | None = None
    summary: str = ""

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i, (x, y) in enumerate(super().batches(epoch, start), start):
            yield (self.augment(x, epoch, i) if self.augment else x), y


class _BatchSet(Dataset):
    """Item j: batch `first + j` of an epoch, fetched under its own seed (any worker, any run)."""

    def __init__(self, ds: Dataset, chunks: list[torch.Tensor], seed: int, epoch: int,
                 first: int) -> None:  # fmt: skip
        self.ds, self.chunks, self.seed, self.epoch, self.first = ds, chunks, seed, epoch, first

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, j: int) -> Any:
        idx = self.chunks[j]
        if isinstance(self.ds, TensorDataset):
            return tuple(t[idx] for t in self.ds.tensors)
        seed = batch_seed(self.seed, self.epoch, self.first + j)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if torch.utils.data.get_worker_info() is not None:
                random.seed(seed)
                np.random.seed(seed % 2**32)
            return default_collate([self.ds[int(i)] for i in idx])


class StreamData:
    """Batches loaded by a DataLoader (workers, pinned memory, prefetch) as the loop asks."""

    path = "streaming"
    fit_1d = False

    def __init__(
        self, train: Dataset, prepare: Prepare, batch_size: int, shuffle: bool, seed: int,
        device: torch.device, num_workers: int = 0, prefetch: int = 2,
        x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
        test: Dataset | None = None, augment: Augment | None = None,
        extras: dict[str, Any] | None = None, summary: str = "",
    ) -> None:  # fmt: skip
        self.train, self.prepare, self.batch_size = train, prepare, batch_size
        self.shuffle, self.seed, self.device = shuffle, seed, device
        self.num_workers, self.prefetch = num_workers, prefetch
        self.pin_memory = device.type == "cuda"
        self.x_test, self.y_test, self.test = x_test, y_test, test
        self.augment, self.extras, self.summary = augment, extras or {}, summary
        self.n = len(train)  # type: ignore[arg-type]
        self.position = {"epoch": 0, "fetched": 0}
        self._sample: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The same order as TensorData's for the same (seed, epoch)."""
        if not self.shuffle:
            return torch.arange(self.n)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=gen)

    def _loader(self, ds: Dataset, chunks: list[torch.Tensor], epoch: int, first: int):
        workers = self.num_workers if not isinstance(self.train, TensorDataset) else 0
        return DataLoader(
            _BatchSet(ds, chunks, self.seed, epoch, first),
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch if workers else None,
            # Its own generator: a DataLoader iterator otherwise draws its base seed from the
            # global RNG, which would move the model's dropout masks (batch seeds come from
            # _BatchSet, so this seed is never used for the data).
            generator=torch.Generator().manual_seed(0),
        )

    def _iterate(self, ds: Dataset, chunks: list[torch.Tensor], epoch: int, first: int):
        it = iter(self._loader(ds, chunks, epoch, first))
        try:
            for xb, yb in it:
                x = self.prepare.x(xb.to(self.device, non_blocking=True))
                yield x, self.prepare.y(yb).to(self.device, non_blocking=True)
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, bs = self.epoch_order(epoch), self.batch_size
        chunks = [order[i * bs : (i + 1) * bs] for i in range(start, self.steps_per_epoch)]
        self.position = {"epoch": epoch, "fetched": start}
        for i, (x, y) in enumerate(self._iterate(self.train, chunks, epoch, start), start):
            if self.augment is not None:
                x = self.augment(x, epoch, i)
            self.position = {"epoch": epoch, "fetched": i + 1}
            yield x, y

    @property
    def has_test(self) -> bool:
        return self.x_test is not None or self.test is not None

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The test split in order: resident tensors where they were kept, else streamed."""
        if self.x_test is not None and self.y_test is not None:
            for i in range(0, len(self.x_test), batch_size):
                yield self.x_test[i : i + batch_size], self.y_test[i : i + batch_size]
        elif self.test is not None:
            n = len(self.test)  # type: ignore[arg-type]
            chunks = list(torch.arange(n).split(batch_size))
            yield from self._iterate(self.test, chunks, -1, 0)

    def state(self) -> dict[str, Any]:
        """Where the stream is (epoch, batches handed out; the loop's checkpoint holds the
        batches trained on, where a resume starts) and the seed every batch's seed comes from:
        batch_seed(seed, epoch, batch), whichever worker loads it."""
        return {"stream": {**self.position, "seed": self.seed, "workers": self.num_workers}}

    def load_state(self, state: dict[str, Any]) -> None:
        if "stream" in state:
            self.position = {k: int(state["stream"][k]) for k in ("epoch", "fetched")}

    def _sample_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._sample is None:
            k = min(self.n, SAMPLE_ROWS)
            xb, yb = _BatchSet(self.train, [torch.arange(k)], self.seed, -2, 0)[0]
            self._sample = (self.prepare.x(xb).to(self.device), self.prepare.y(yb).to(self.device))
        return self._sample

    @property
    def x(self) -> torch.Tensor:
        """A sample of the training inputs (the model check, diagnosis), not the whole split."""
        return self._sample_batch()[0]

    @property
    def y(self) -> torch.Tensor:
        return self._sample_batch()[1]


# --- sources ---------------------------------------------------------------------------------


@dataclass
class Source:
    train: Dataset
    test: Dataset | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    images: bool = False  # samples are (C, H, W) images: `augment` applies


def _tensor_source(x: Any, y: Any, xt: Any, yt: Any, key: str, extras=None) -> Source:
    def tensor(v: Any, name: str) -> torch.Tensor:
        try:
            return torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
        except (TypeError, ValueError, RuntimeError) as err:
            raise DataError(f"[data] {key}: {name} is not an array of numbers: {err}") from None

    x, y = tensor(x, "x"), tensor(y, "y")
    if len(x) != len(y):
        raise DataError(f"[data] {key}: x has {len(x)} rows but y has {len(y)}")
    test = None
    if (xt is None) != (yt is None):
        raise DataError(f"[data] {key}: give both x_test and y_test, or neither")
    if xt is not None:
        xt, yt = tensor(xt, "x_test"), tensor(yt, "y_test")
        if len(xt) != len(yt):
            raise DataError(f"[data] {key}: x_test has {len(xt)} rows but y_test has {len(yt)}")
        test = TensorDataset(xt, yt)
    return Source(TensorDataset(x, y), test, dict(extras or {}), images=x.dim() == 4)


def _split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) indices, each in dataset order, the test part drawn by `seed`."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    k = round(n * fraction)
    return sorted(perm[k:].tolist()), sorted(perm[:k].tolist())


def _split_tensors(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int):
    if not fraction:
        return x, y, None, None
    tr, te = _split(len(x), fraction, seed)
    return x[tr], y[tr], x[te], y[te]


# torchvision: name -> (split keyword, files expected under root)
TORCHVISION = {
    "MNIST": ("train", "MNIST/raw"),
    "FashionMNIST": ("train", "FashionMNIST/raw"),
    "KMNIST": ("train", "KMNIST/raw"),
    "QMNIST": ("train", "QMNIST/raw"),
    "CIFAR10": ("train", "cifar-10-batches-py"),
    "CIFAR100": ("train", "cifar-100-python"),
    "SVHN": ("split", "train_32x32.mat and test_32x32.mat"),
    "STL10": ("split", "stl10_binary"),
    "USPS": ("train", "usps.bz2 and usps.t.bz2"),
}


def torchvision_class(name: str, verify: bool) -> Any:
    """torchvision's class; without `verify` the md5 sums are not checked (files must exist)."""
    import torchvision.datasets as tvd

    base = getattr(tvd, name)
    if verify:
        return base
    patch: dict[str, Any] = {}
    for attr in ("train_list", "test_list"):
        if hasattr(base, attr):
            patch[attr] = [[entry[0], None] for entry in getattr(base, attr)]
    if isinstance(getattr(base, "meta", None), dict) and "md5" in base.meta:
        patch["meta"] = {**base.meta, "md5": None}
    if isinstance(getattr(base, "split_list", None), dict):
        patch["split_list"] = {k: [*v[:2], None] for k, v in base.split_list.items()}
    return type(name, (base,), patch)  # the same name: MNIST's folder is root/<class name>


def torchvision_missing_message(name: str, root: Path) -> str:
    kw, where = TORCHVISION[name]
    expected = root / where if "/" in where or "." not in where else f"{where} in {root}"
    call = f"torchvision.datasets.{name}('{root}', {{}}, download=True)"
    splits = ("train=True", "train=False") if kw == "train" else ("split='train'", "split='test'")
    get = "; ".join(call.format(s) for s in splits)
    return (
        f"[data] root: {name} not found: expected {expected}. Get it with: "
        f'python -c "import torchvision; {get}" or point --set data.root=DIR at that folder'
    )


def _raw_images(ds: Any, limit: int | None) -> TensorDataset | None:
    """A torchvision dataset's arrays as uint8 (N, C, H, W) and labels, without PIL."""
    data = getattr(ds, "data", None)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = getattr(ds, "labels", None)
    if data is None or labels is None:
        return None
    x = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.asarray(data))
    if x.dtype != torch.uint8 or x.dim() not in (3, 4):
        return None
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(labels)).long()
    if y.dim() > 1:  # QMNIST's extended labels: the class is the first column
        y = y[:, 0]
    return TensorDataset(x[:limit].contiguous(), y[:limit])


def load_torchvision(data: dict[str, Any], task: str) -> Source:
    name = data["dataset"]
    root = Path(data["root"]).expanduser().resolve()
    cls = torchvision_class(name, data["verify"])
    kw = TORCHVISION[name][0]
    try:
        parts = [
            cls(str(root), **({kw: flag} if kw == "train" else {kw: split}), download=False)
            for flag, split in ((True, "train"), (False, "test"))
        ]
    except RuntimeError:
        raise DataError(torchvision_missing_message(name, root)) from None
    except (OSError, EOFError, KeyError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"[data] root: {name} files under {root} are unreadable: {first}") from None
    limit = data["limit"] or None
    train, test = (_raw_images(p, limit) for p in parts)
    if train is None or test is None:
        raise DataError(f"[data] dataset: {name}'s arrays are not uint8 images")
    classes = getattr(parts[0], "classes", None)
    extras = {"classes": list(classes)} if classes else {}
    return Source(train, test, extras, images=True)


class ImageTransform:
    """PIL image -> uint8 (C, H, W) tensor of the configured size and channels (picklable)."""

    def __init__(self, size: int, channels: int) -> None:
        self.size, self.channels = size, channels

    def __call__(self, img: Any) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        img = img.convert("L" if self.channels == 1 else "RGB")
        t = F.pil_to_tensor(img)
        if tuple(t.shape[-2:]) != (self.size, self.size):
            t = F.resize(t, [self.size, self.size], antialias=True)
        return t


def load_image_folder(data: dict[str, Any], task: str) -> Source:
    from torchvision.datasets import ImageFolder

    root = Path(data["root"]).expanduser().resolve()
    if not root.is_dir():
        raise DataError(
            f"[data] root: no folder {root} (expected one subfolder per class, or train/ and "
            "test/ each with one subfolder per class)"
        )
    tf = ImageTransform(data["image_size"], data["channels"])
    has_split = (root / "train").is_dir()

    def folder(path: Path) -> Any:
        try:
            return ImageFolder(str(path), transform=tf)
        except (FileNotFoundError, OSError) as err:
            raise DataError(f"[data] root: {str(err).strip().splitlines()[0]}") from None

    train = folder(root / "train" if has_split else root)
    test: Dataset | None = None
    if has_split and (root / "test").is_dir():
        test = folder(root / "test")
        if test.classes != train.classes:  # type: ignore[attr-defined]
            raise DataError(
                f"[data] root: test/ has classes {test.classes} but train/ has {train.classes}"  # type: ignore[attr-defined]
            )
    elif data["test_fraction"]:
        tr, te = _split(len(train), data["test_fraction"], data["split_seed"])
        train, test = Subset(train, tr), Subset(train, te)
    classes = train.classes if isinstance(train, Dataset) and hasattr(train, "classes") else None
    classes = classes or train.dataset.classes  # type: ignore[attr-defined]
    return Source(train, test, {"classes": list(classes)}, images=True)


def load_csv(data: dict[str, Any], task: str) -> Source:
    path = Path(data["path"]).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"[data] path: no file {path}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter=data["delimiter"]))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"[data] path: cannot read {path}: {err}") from None
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise DataError(f"[data] path: {path} has no rows under its header")
    header = [h.strip() for h in rows[0]]
    target = data["target"]
    if target not in header:
        raise DataError(
            f"[data] target: no column {target!r} in {path.name} (columns: {', '.join(header)})"
        )
    features = data["features"] or [h for h in header if h != target]
    missing = [f for f in features if f not in header]
    if missing:
        raise DataError(
            f"[data] features: no column {missing[0]!r} in {path.name} "
            f"(columns: {', '.join(header)})"
        )
    if target in features:
        raise DataError(f"[data] features: {target!r} is the target")
    body = rows[1:]
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"[data] path: {path.name} line {i + 2} has {len(row)} fields, "
                f"the header {len(header)}"
            )
    cols = {h: [r[j].strip() for r in body] for j, h in enumerate(header)}
    x = torch.tensor([_numbers(cols[f], f, path.name) for f in features], dtype=torch.float64).T
    extras: dict[str, Any] = {"features": list(features)}
    if task == "classification":
        labels = cols[target]
        try:
            classes: list[Any] = sorted({int(v) for v in labels})
            index = {str(c): i for i, c in enumerate(classes)}
            y = torch.tensor([index[str(int(v))] for v in labels])
        except ValueError:
            classes = sorted(set(labels))
            index = {c: i for i, c in enumerate(classes)}
            y = torch.tensor([index[v] for v in labels])
        extras["classes"] = classes
    else:
        y = torch.tensor(_numbers(cols[target], target, path.name), dtype=torch.float64)
    x, y, xt, yt = _split_tensors(x, y, data["test_fraction"], data["split_seed"])
    return _tensor_source(x, y, xt, yt, "path", extras)


def _numbers(values: list[str], column: str, name: str) -> list[float]:
    out = []
    for i, v in enumerate(values):
        try:
            out.append(float(v))
        except ValueError:
            raise DataError(
                f"[data] path: {name} column {column!r} line {i + 2}: {v!r} is not a number"
            ) from None
    return out


def load_tensors(data: dict[str, Any], task: str) -> Source:
    path = Path(data["path"]).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"[data] path: no file {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        elif path.suffix in (".pt", ".pth"):
            arrays = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise DataError(f"[data] path: {path.name}: expected a .npz, .pt or .pth file")
    except DataError:
        raise
    except Exception as err:  # unreadable file: whatever the reader raised, as one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"[data] path: cannot read {path.name}: {first}") from None
    if not isinstance(arrays, dict) or "x" not in arrays or "y" not in arrays:
        keys = ", ".join(map(str, arrays)) if isinstance(arrays, dict) else type(arrays).__name__
        raise DataError(
            f"[data] path: {path.name} must hold keys x and y (and optionally x_test, "
            f"y_test); has {keys}"
        )
    return _tensor_source(
        arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"), "path"
    )


def _is_array(v: Any) -> bool:
    return isinstance(v, (torch.Tensor, np.ndarray))


def load_factory(data: dict[str, Any], task: str) -> Source:
    target = data["factory"]
    module_name, _, func_name = target.partition(":")
    try:
        module = import_user_module(module_name)
    except ImportError as err:
        raise DataError(f"[data] factory: cannot import {module_name!r}: {err}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise DataError(f"[data] factory: {module_name!r} has no function {func_name!r}")
    try:
        out = func(**data["kwargs"])
    except Exception as err:  # user code: report whatever it raised, as one line
        raise DataError(f"[data] factory: {target} failed: {type(err).__name__}: {err}") from None
    if isinstance(out, dict) and "x" in out and "y" in out:
        return _tensor_source(out["x"], out["y"], out.get("x_test"), out.get("y_test"), "factory")
    if isinstance(out, dict) and isinstance(out.get("train"), Dataset):
        out = (out["train"], out.get("test"))
    if isinstance(out, (tuple, list)) and len(out) in (2, 4) and all(_is_array(v) for v in out):
        return _tensor_source(*out, *([None, None] if len(out) == 2 else []), key="factory")
    if isinstance(out, Dataset):
        out = (out, None)
    if (
        isinstance(out, (tuple, list))
        and len(out) == 2
        and isinstance(out[0], Dataset)
        and (out[1] is None or isinstance(out[1], Dataset))
    ):
        return _dataset_source(out[0], out[1], target)
    raise DataError(
        f"[data] factory: {target} returned {type(out).__name__}: expected a Dataset, "
        "(train, test) Datasets, {'train': ..., 'test': ...}, or tensors (x, y[, x_test, y_test])"
    )


def _dataset_source(train: Dataset, test: Dataset | None, target: str) -> Source:
    if not hasattr(train, "__len__"):
        raise DataError(f"[data] factory: {target} returned a Dataset without a length")
    if len(train) == 0:  # type: ignore[arg-type]
        raise DataError(f"[data] factory: {target} returned an empty Dataset")
    sample = train[0]
    if not isinstance(sample, (tuple, list)) or len(sample) != 2:
        raise DataError(
            f"[data] factory: {target}'s Dataset items must be (x, y) pairs, "
            f"got {type(sample).__name__}"
        )
    x0 = torch.as_tensor(sample[0])
    extras = {}
    if hasattr(train, "classes"):
        extras["classes"] = list(train.classes)  # type: ignore[attr-defined]
    return Source(train, test, extras, images=x0.dim() == 3)


LOADERS: dict[str, Callable[[dict[str, Any], str], Source]] = {
    "torchvision": load_torchvision,
    "image_folder": load_image_folder,
    "csv": load_csv,
    "tensors": load_tensors,
    "factory": load_factory,
}

# --- choosing the path ------------------------------------------------------------------------


def resident_budget(device: torch.device) -> int:
    """Bytes the resident path may take on `device` (TORCHDECK_RESIDENT_BYTES overrides)."""
    if os.environ.get(BUDGET_ENV):
        return int(float(os.environ[BUDGET_ENV]))
    import psutil

    host = int(psutil.virtual_memory().available * RESIDENT_FRACTION)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return min(host * 2, int(free * RESIDENT_FRACTION_CUDA))
    return host


def _materialise(ds: Dataset, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(ds, TensorDataset):
        return ds.tensors[0], ds.tensors[1]
    n = len(ds)  # type: ignore[arg-type]
    loader = DataLoader(
        _BatchSet(ds, list(torch.arange(n).split(512)), 0, -3, 0),
        batch_size=None,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def _nbytes(n: int, sample: torch.Tensor, dtype: torch.dtype) -> int:
    """Bytes of n prepared samples (uint8 and floats become `dtype`)."""
    as_float = sample.dtype == torch.uint8 or sample.is_floating_point()
    item = torch.empty((), dtype=dtype).element_size() if as_float else sample.element_size()
    return n * max(sample.numel(), 1) * item


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB" if n < 2**30 else f"{n / 2**30:,.1f} GB"


def build_source_data(config: dict[str, Any], device: torch.device) -> ResidentData | StreamData:
    data, train = config["data"], config["train"]
    dtype, task = DTYPES[train["dtype"]], config["task"]
    src = LOADERS[data["source"]](data, task)
    n = len(src.train)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"[data] {data['source']}: the training split is empty")
    n_test = len(src.test) if src.test is not None else 0  # type: ignore[arg-type]
    sample = torch.as_tensor(src.train[0][0])
    prepare = Prepare(dtype, task, list(data.get("mean", [])), list(data.get("std", [])))
    if prepare.mean and len(prepare.mean) != len(prepare.std):
        raise DataError("[data] std: give as many values as mean")
    specs = data.get("augment") or []
    augment = Augment(specs, train["seed"]) if specs else None
    if augment is not None and sample.dim() != 3:
        raise DataError(f"[data] augment: needs images (C, H, W); one sample is {_shape(sample)}")
    need = _nbytes(n + n_test, sample, dtype)
    budget = resident_budget(device) if data["resident"] == "auto" else 0
    resident = need <= budget if data["resident"] == "auto" else bool(data["resident"])
    workers = data["num_workers"]
    about = f"{n:,} train / {n_test:,} test samples of {_shape(sample)}"
    if resident:
        x, y = _materialise(src.train, workers)
        xt = yt = None
        if src.test is not None and n_test:
            xt, yt = _materialise(src.test, workers)
            xt, yt = prepare.x(xt.to(device)), prepare.y(yt).to(device)
        summary = f"data: resident on {device}, {about} ({_mb(need)}, prepared once)"
        return ResidentData(
            x=prepare.x(x.to(device)),
            y=prepare.y(y).to(device),
            batch_size=train["batch_size"],
            shuffle=train["shuffle"],
            seed=train["seed"],
            x_test=xt,
            y_test=yt,
            extras=src.extras,
            augment=augment,
            summary=summary,
        )
    xt = yt = None
    if (
        src.test is not None
        and n_test
        and _nbytes(n_test, sample, dtype) <= resident_budget(device)
    ):
        xt, yt = _materialise(src.test, workers)
        xt, yt = prepare.x(xt.to(device)), prepare.y(yt).to(device)
    pinned = ", pinned" if device.type == "cuda" else ""
    why = "data.resident = false" if data["resident"] is False else f"{_mb(need)} > {_mb(budget)}"
    if isinstance(src.train, TensorDataset):  # already in host memory: no worker would help
        workers, how = 0, f"from host memory{pinned}"
    else:
        how = f"through a DataLoader ({workers} workers{pinned})"
    summary = f"data: streaming {how}, {about} ({why})"
    return StreamData(
        src.train, prepare, train["batch_size"], train["shuffle"], train["seed"], device,
        num_workers=workers, prefetch=data["prefetch"], x_test=xt, y_test=yt,
        test=src.test if xt is None else None, augment=augment, extras=src.extras,
        summary=summary,
    )  # fmt: skip


# --- scikit-learn's bundled tables, for presets that must run offline -------------------------


def sklearn_table(name: str = "wine", test_fraction: float = 0.25, seed: int = 0,
                  standardize: bool = True) -> dict[str, torch.Tensor]:  # fmt: skip
    """load_wine / load_iris / load_breast_cancer / load_digits as train and test tensors,
    split stratified by `seed`, the features standardised with the training split's mean/std."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    loader = getattr(sklearn.datasets, f"load_{name}", None)
    if name not in ("wine", "iris", "breast_cancer", "digits") or loader is None:
        raise ValueError(f"unknown table {name!r} (wine, iris, breast_cancer or digits)")
    bunch = loader()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.data, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    x, xt = torch.from_numpy(x_train), torch.from_numpy(x_test)
    if standardize:
        mean, std = x.mean(0), x.std(0).clamp_min(1e-12)
        x, xt = (x - mean) / std, (xt - mean) / std
    return {
        "x": x,
        "y": torch.from_numpy(y_train).long(),
        "x_test": xt,
        "y_test": torch.from_numpy(y_test).long(),
    }
