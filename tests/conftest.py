from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

_TEMP_ROOT = ""


def pytest_configure(config) -> None:
    """Every temp file of the session (pytest's own, the processes the tests start, torch's
    caches) lands in one folder that is removed at the end, so a run leaves nothing in /tmp."""
    global _TEMP_ROOT
    _TEMP_ROOT = tempfile.mkdtemp(prefix="torchdeck-tests-")
    os.environ["TMPDIR"] = _TEMP_ROOT
    tempfile.tempdir = _TEMP_ROOT


def pytest_unconfigure(config) -> None:
    if _TEMP_ROOT:
        shutil.rmtree(_TEMP_ROOT, ignore_errors=True)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def cli(capsys):
    """Call the torchdeck command in-process: returns (exit code, stdout, stderr)."""
    from tui.cli import main

    def call(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


@pytest.fixture(autouse=True)
def _no_user_presets(tmp_path_factory, monkeypatch):
    """Tests never see the developer's own ~/.config/torchdeck/presets."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.delenv("TORCHDECK_RUNS", raising=False)
