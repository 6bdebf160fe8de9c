"""Importing the user's `module:function` code (models, data factories)."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType


def import_user_module(name: str) -> ModuleType:
    """Import `name` as `python -m` would: the current folder is searched first, so a
    `my_model.py` beside the preset works without PYTHONPATH."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    return importlib.import_module(name)
