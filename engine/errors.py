"""Errors a user can cause. Each carries one line that names the file or option and the problem."""

from __future__ import annotations


class TorchdeckError(Exception):
    """A problem the user can fix; the CLI prints `str(err)` and exits with status 2."""

    exit_code = 2


class ConfigError(TorchdeckError):
    """A preset file, a --set override or a config value is wrong."""


class DeviceError(TorchdeckError):
    """The requested device does not exist on this machine."""


class DataError(TorchdeckError):
    """A dataset is missing or unreadable."""


class RunDirError(TorchdeckError):
    """The runs folder cannot be written, or a run cannot be found or read."""
