"""Atomic checkpoint files: temp file in the same folder, fsync, os.replace.

A write that dies part-way leaves the previous file as it was. Everything saved is a
tensor, a number, a string or a container of those, so `torch.load(weights_only=True)`
reads it back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call write(fileobj) on a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state(data_state: dict[str, Any]) -> dict[str, Any]:
    """Every random stream the loop draws from, as tensors."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "data": data_state}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
