"""The README's "Train your own model" examples, run as written, so the README cannot drift.

Each example is a set of fenced blocks, each after a `<!-- example: NAME FILE -->` comment:
FILE is written into an empty folder with the block's text, and `command` is the shell line
run there (through the real `torchdeck` command, `--set train.epochs=2` added, runs in the
test's folder), on tiny data the test makes (the README's users bring their own).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import make_image_folder

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = re.compile(r"<!-- example: (\S+) (\S+) -->\n```[\w-]*\n(.*?)```", re.S)
EXAMPLES = ("csv", "images")


def examples() -> dict[str, dict[str, str]]:
    """{example: {file name or 'command': block text}} from README.md."""
    found: dict[str, dict[str, str]] = {}
    for name, target, body in MARKER.findall(README.read_text(encoding="utf-8")):
        assert target not in found.setdefault(name, {}), f"{name}: {target} given twice"
        found[name][target] = body
    return found


def make_csv(folder: Path) -> None:
    """houses.csv: price a linear function of three columns, plus noise."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (120, 3))
    price = x @ np.array([3.0, -2.0, 1.0]) + 0.5 + rng.normal(0, 0.05, 120)
    rows = ["area,rooms,age,price"] + [",".join(f"{v:.4f}" for v in (*r, p)) for r, p in
                                       zip(x, price, strict=True)]  # fmt: skip
    (folder / "houses.csv").write_text("\n".join(rows) + "\n")


def make_images(folder: Path) -> None:
    make_image_folder(folder / "pets", per_class=8, size=16, classes=("cats", "dogs"))


DATA = {"csv": make_csv, "images": make_images}


def torchdeck() -> list[str]:
    script = Path(sys.executable).parent / "torchdeck"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from tui.cli import main; sys.exit(main())"]


def test_every_example_is_complete():
    found = examples()
    assert sorted(found) == sorted(EXAMPLES), f"README examples: {sorted(found)}"
    for name, files in found.items():
        assert "command" in files, f"{name}: no command block"
        assert any(f.endswith(".toml") for f in files), f"{name}: no preset"
        assert any(f.endswith(".py") for f in files), f"{name}: no model module"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_trains(tmp_path, name):
    files = examples()[name]
    work = tmp_path / name
    work.mkdir()
    for target, body in files.items():
        if target != "command":
            (work / target).write_text(body)
    DATA[name](work)
    words = shlex.split(files["command"].strip())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value before the command
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words[0] == "torchdeck", files["command"]
    runs = tmp_path / "runs"
    cmd = [*torchdeck(), *words[1:], "--set", "train.epochs=2", "--runs-dir", str(runs)]
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "result:" in out.stdout and "finished after" in out.stdout, out.stdout[-2000:]
    (run,) = runs.iterdir()
    assert 'status = "finished"' in (run / "run.toml").read_text()
