"""Turning any error into one line a user can read (the app shows it; never a traceback)."""

from __future__ import annotations


def user_message(error: BaseException) -> str:
    """TorchdeckError messages as they are; anything else as 'Type: first line'."""
    from engine.errors import TorchdeckError

    if isinstance(error, TorchdeckError):
        return str(error) or type(error).__name__
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
