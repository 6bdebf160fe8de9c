"""Data sources: every preset's [data] becomes an in-memory tensor dataset or a stream.

Batch order comes from a generator seeded from (seed, epoch), so a resumed run finds the
same order and can start in the middle of an epoch.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.errors import DataError
from engine.exprs import evaluate

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


@dataclass
class TensorData:
    """A dataset that fits in memory, on the training device."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    shuffle: bool
    seed: int
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    path = "resident"  # vs "streaming" (engine.datasets.StreamData): shown at the start

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    @property
    def has_test(self) -> bool:
        return self.x_test is not None

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The test split in order, `batch_size` at a time."""
        x, y = self.x_test, self.y_test
        if x is None or y is None:
            return
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]

    def epoch_order(self, epoch: int) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(len(self.x), generator=gen).to(self.x.device)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches `start`.. of `epoch`, in the order fixed by (seed, epoch)."""
        order = self.epoch_order(epoch)
        bs, x, y = self.batch_size, self.x, self.y
        for i in range(start, self.steps_per_epoch):
            if order is None:
                yield x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]
            else:
                idx = order[i * bs : (i + 1) * bs]
                yield x[idx], y[idx]

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    @property
    def fit_1d(self) -> bool:
        """True where a fit view (data and prediction over x) makes sense."""
        return (
            self.x.dim() == 2
            and self.x.shape[1] == 1
            and self.y.dim() == 2
            and self.y.shape[1] == 1
            and self.y.is_floating_point()
            and len(self.x) <= 5000
        )


@dataclass
class TeacherStream:
    """A fresh batch every step from a fixed linear teacher: y = x @ w_real.T + b_real."""

    w_real: torch.Tensor
    b_real: torch.Tensor
    batch_size: int
    steps_per_epoch: int
    generator: torch.Generator
    device: torch.device
    dtype: torch.dtype
    extras: dict[str, Any] = field(default_factory=dict)
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    fit_1d: bool = False
    path = "generated"

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        w, b = self.w_real, self.b_real
        shape = (self.batch_size, w.shape[1])
        for _ in range(start, self.steps_per_epoch):
            x = torch.rand(shape, generator=self.generator, dtype=self.dtype).to(self.device)
            yield x, x @ w.T + b

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])

    @property
    def x(self) -> torch.Tensor:
        """A sample batch (used to check the model fits the data); does not touch the stream."""
        gen = torch.Generator().manual_seed(0)
        return torch.rand((2, self.w_real.shape[1]), generator=gen, dtype=self.dtype).to(
            self.device
        )


# sources of the user's own data (engine.datasets): resident or streamed, by size
FILE_SOURCES = ("torchvision", "image_folder", "csv", "tensors", "factory")


def build_data(config: dict[str, Any], device: torch.device) -> Any:
    """TensorData, TeacherStream, or for FILE_SOURCES engine.datasets' ResidentData/StreamData."""
    data, train = config["data"], config["train"]
    dtype = DTYPES[train["dtype"]]
    source = data["source"]
    if source == "teacher":
        return _teacher(data, train, device, dtype)
    if source in FILE_SOURCES:
        from engine.datasets import build_source_data

        return build_source_data(config, device)
    loader = {
        "formula": _formula,
        "blobs": _blobs,
        "digits": _digits,
        "cifar10": _cifar10,
        "fixed": _fixed,
        "random": _random,
    }[source]
    x, y, x_test, y_test, extras = loader(data, config["task"])

    def place(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = t.to(dtype) if t.is_floating_point() else t
        return t.to(device)

    return TensorData(
        x=place(x),
        y=place(y),
        batch_size=train["batch_size"],
        shuffle=train["shuffle"],
        seed=train["seed"],
        x_test=place(x_test),
        y_test=place(y_test),
        extras=extras,
    )


Loaded = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, dict]


def _column(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, 1)


def _formula(data: dict[str, Any], task: str) -> Loaded:
    x = evaluate(data["x"], {}, dtype=torch.float64)
    if not isinstance(x, torch.Tensor) or x.dim() != 1:
        raise DataError(f"[data] x: {data['x']!r} must give a 1-D tensor")
    y = evaluate(data["y"], {"x": x}, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64).broadcast_to(x.shape)
    return _column(x), _column(y), None, None, {}


def _blobs(data: dict[str, Any], task: str) -> Loaded:
    from sklearn.datasets import make_blobs

    points, _ = make_blobs(
        n_samples=data["n_samples"],
        n_features=data["n_features"],
        centers=data["centers"],
        random_state=data["random_state"],
    )
    if data["transform"]:
        import numpy as np

        points = np.dot(points, data["transform"])
    pts = torch.from_numpy(points)
    return _column(pts[:, data["x_col"]]), _column(pts[:, data["y_col"]]), None, None, {}


def _digits(data: dict[str, Any], task: str) -> Loaded:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data,
        digits.target,
        test_size=data["test_fraction"],
        random_state=data["split_seed"],
        stratify=digits.target,
    )

    def images(a: Any) -> torch.Tensor:
        t = torch.from_numpy(a).float() / data["scale"]
        return t.reshape(-1, 1, 8, 8) if data["image"] else t

    return (
        images(x_train),
        torch.from_numpy(y_train).long(),
        images(x_test),
        torch.from_numpy(y_test).long(),
        {},
    )


def cifar10_dataset_class(verify: bool):
    """torchvision's CIFAR10; without `verify` it checks that the files exist, not their md5."""
    from torchvision.datasets import CIFAR10

    if verify:
        return CIFAR10

    class CIFAR10Files(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return CIFAR10Files


def cifar10_missing_message(root: Path) -> str:
    folder = root / "cifar-10-batches-py"
    return (
        f"[data] root: CIFAR-10 not found: expected {folder} (data_batch_1..5, test_batch, "
        f'batches.meta). Get it with: python -c "import torchvision; '
        f"torchvision.datasets.CIFAR10('{root}', download=True)\" or point --set data.root=DIR "
        f"at a folder that holds cifar-10-batches-py"
    )


def _cifar10(data: dict[str, Any], task: str) -> Loaded:
    root = Path(data["root"]).expanduser().resolve()
    cls = cifar10_dataset_class(data["verify"])
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError:
        raise DataError(cifar10_missing_message(root)) from None
    except (OSError, pickle.UnpicklingError, EOFError, KeyError) as err:
        raise DataError(f"[data] root: CIFAR-10 files under {root} are unreadable: {err}") from None
    mean = torch.tensor(data["mean"], dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.tensor(data["std"], dtype=torch.float32).reshape(-1, 1, 1)
    limit = data["limit"] or None

    def tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return cifar10_to_tensor(ds.data[:limit], mean, std), torch.tensor(ds.targets[:limit])

    x, y = tensors(train)
    xt, yt = tensors(test)
    return x, y, xt, yt, {"classes": list(train.classes)}


def cifar10_to_tensor(images: Any, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """ToTensor then Normalize over a whole uint8 NHWC array at once (same values per image)."""
    t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return t.to(torch.float32).div(255).sub_(mean).div_(std)


def _own(source: str):
    """The loader engine.datasets has for a FILE_SOURCES source (named _<source> here too)."""

    def load(data: dict[str, Any], task: str) -> Any:
        from engine.datasets import LOADERS

        return LOADERS[source](data, task)

    load.__name__ = f"_{source}"
    return load


_torchvision, _image_folder, _csv, _tensors, _factory = (_own(s) for s in FILE_SOURCES)


def _fixed(data: dict[str, Any], task: str) -> Loaded:
    def as_batch(values: Any, key: str, integer: bool) -> torch.Tensor:
        try:
            t = torch.tensor(values, dtype=torch.long if integer else torch.float64)
        except (TypeError, ValueError) as err:
            raise DataError(f"[data] {key}: not a list of numbers: {err}") from None
        return t.reshape(1, -1) if t.dim() <= 1 and not integer else t.reshape(-1)

    x = as_batch(data["x"], "x", False)
    y = as_batch(data["y"], "y", task == "classification")
    if task != "classification" and y.shape[0] != x.shape[0]:
        raise DataError(f"[data] y: {len(y)} rows of targets for {len(x)} rows of inputs")
    return x, y, None, None, {}


def _random(data: dict[str, Any], task: str) -> Loaded:
    """Gaussian inputs and random labels or targets from a fixed generator (benchmarks)."""
    gen = torch.Generator().manual_seed(12345)
    n = data["n_samples"]
    x = torch.randn((n, *data["shape"]), generator=gen)
    if task == "classification":
        y = torch.randint(0, data["classes"], (n,), generator=gen)
    else:
        y = torch.randn((n, data["targets"]), generator=gen)
    return x, y, None, None, {}


def _teacher(data: dict[str, Any], train: dict[str, Any], device, dtype) -> TeacherStream:
    teacher_gen = torch.Generator().manual_seed(train["seed"])
    shape = (data["out_features"], data["in_features"])
    w_real = torch.rand(shape, generator=teacher_gen, dtype=dtype).to(device)
    b_real = torch.rand(data["out_features"], generator=teacher_gen, dtype=dtype).to(device)
    return TeacherStream(
        w_real=w_real,
        b_real=b_real,
        batch_size=train["batch_size"],
        steps_per_epoch=data["steps_per_epoch"],
        generator=torch.Generator().manual_seed(epoch_seed(train["seed"], 1)),
        device=device,
        dtype=dtype,
        extras={"w_real": w_real, "b_real": b_real},
    )
