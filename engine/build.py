"""Turning a resolved config into everything a run needs, checking it all before any file is made.

Order matters: device, data, model and a trial forward pass are checked first, so that a bad
config, a missing device or dataset fails with one message and leaves no run folder behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.data import DTYPES, TeacherStream, TensorData, build_data
from engine.devices import resolve_device
from engine.errors import ConfigError
from engine.losses import LOSSES, LossFn
from engine.models import build_model, user_error
from engine.optim import build_optimizer
from engine.rundir import RunDir, default_runs_dir
from engine.train.recipe import check_recipe, prepare_model


@dataclass
class PreparedRun:
    config: dict[str, Any]
    device: torch.device
    data: TensorData | TeacherStream
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: LossFn
    run: RunDir
    train_model: nn.Module | None = None  # what the loop calls, where it wraps `model` (DDP)


def build_parts(config: dict[str, Any], device_option: str = "[train] device"):
    """Device, data, model (seeded and initialised), optimiser and loss for a config."""
    train = config["train"]
    device = resolve_device(train["device"], option=device_option)
    if train["threads"]:
        torch.set_num_threads(train["threads"])
    data = build_data(config, device)
    torch.manual_seed(train["seed"])
    model = build_model(config["model"]).to(device=device, dtype=DTYPES[train["dtype"]])
    model = prepare_model(model, config)  # channels-last where asked
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("[model] has no parameters to train")
    optimizer = build_optimizer(model.parameters(), config["optim"])
    loss_fn = LOSSES[train["loss"]]
    check_model_fits(model, data, loss_fn)
    check_recipe(config, device, data, model)
    return device, data, model, optimizer, loss_fn


def check_model_fits(model: nn.Module, data: TensorData | TeacherStream, loss_fn: LossFn) -> None:
    """One forward pass in eval mode (no dropout, so no RNG drawn) on two samples."""
    x = data.x[:2]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
            y = getattr(data, "y", None)  # a TeacherStream has none; a StreamData, a sample
            if y is not None:
                loss_fn(out, y[:2])
    except (RuntimeError, ValueError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        shape = tuple(x.shape[1:])
        raise ConfigError(
            f"[model] does not fit the data (one sample is {shape}): {first}"
        ) from None
    except (Exception, SystemExit) as err:  # a factory model's own forward raised
        raise ConfigError(f"[model] forward failed on one sample: {user_error(err)}") from None
    finally:
        model.train(was_training)


def prepare_run(
    config: dict[str, Any],
    runs_dir: str | Path | None = None,
    device_option: str = "[train] device",
) -> PreparedRun:
    device, data, model, optimizer, loss_fn = build_parts(config, device_option)
    run = RunDir.create(
        Path(runs_dir) if runs_dir is not None else default_runs_dir(),
        config["name"],
        config,
        str(device),
    )
    return PreparedRun(config, device, data, model, optimizer, loss_fn, run)
