"""Atomic checkpoint files: temp file in the same folder, fsync, os.replace.

A write that dies part-way leaves the previous file as it was. Everything saved is a
tensor, a number, a string or a container of those, so `torch.load(weights_only=True)`
reads it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.atomic import atomic_write_bytes


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


def not_a_checkpoint(ckpt: Any) -> str:
    """'' or why a loaded file is not one of our checkpoints (a foreign torch file)."""
    if type(ckpt) is not dict:
        return f"holds a {type(ckpt).__name__}, not a checkpoint"
    kinds = {
        "model": dict, "optimizer": dict, "step": int, "epoch": int, "batch": int,
        "rng": dict, "config": dict,
    }  # fmt: skip
    for key, kind in kinds.items():
        if not isinstance(ckpt.get(key), kind) or isinstance(ckpt.get(key), bool):
            return f"not a checkpoint (no valid {key!r})"
    if not all(isinstance(t, torch.Tensor) for t in ckpt["model"].values()):
        return "not a checkpoint (its model holds more than tensors)"
    return ""
