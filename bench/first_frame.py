"""Time from Enter in a shell to the app's first frame, in a real terminal (tmux).

    .venv/bin/python bench/first_frame.py [--rounds 3]

For each size it starts a tmux session running a shell, types the `torchdeck` command,
presses Enter, and polls the screen (capture-pane) until the presets pane shows; then it
quits the app. Prints the median and every round per size. Needs tmux.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = ((120, 40), (80, 24), (200, 60))
READY = "Presets"  # the title of the presets pane: part of the first frame


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def first_frame(width: int, height: int, runs_dir: Path) -> float:
    session = f"td-first-frame-{width}x{height}"
    exe = Path(sys.executable).parent / "torchdeck"
    tmux("new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), "bash --norc")
    try:
        time.sleep(0.5)  # the shell's prompt
        tmux("send-keys", "-t", session, f"{exe} --runs-dir {runs_dir}", "")
        start = time.perf_counter()
        tmux("send-keys", "-t", session, "Enter")
        while READY not in tmux("capture-pane", "-p", "-t", session):
            if time.perf_counter() - start > 30:
                raise SystemExit(f"{width}x{height}: no frame within 30 s")
            time.sleep(0.01)
        took = time.perf_counter() - start
        tmux("send-keys", "-t", session, "q")
        time.sleep(0.5)
        return took
    finally:
        tmux("kill-session", "-t", session)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="td-bench-") as tmp:
        for width, height in SIZES:
            times = [first_frame(width, height, Path(tmp)) for _ in range(args.rounds)]
            rounds = ", ".join(f"{t:.2f}" for t in times)
            print(f"first frame at {width}x{height}: median {statistics.median(times):.2f} s "
                  f"(rounds {rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
