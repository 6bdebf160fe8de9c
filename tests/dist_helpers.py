"""Helpers for the tests that start distributed runs (torchrun + gloo) as a user would: in a
session of their own (a terminal's process group), marked in their environment so that
every process they lead to (launcher, torchrun agent, ranks) can be found and ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARK = "TORCHDECK_TEST_MARK"


class Launched:
    """One `torchdeck ...` command started in its own session; output goes to files."""

    def __init__(self, args: list[str], out_dir: Path, prefix: list[str] = (), env=None) -> None:
        self.mark = uuid.uuid4().hex
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_path = out_dir / f"{self.mark}.out"
        self.err_path = out_dir / f"{self.mark}.err"
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tui.cli", *args],
            cwd=ROOT,
            stdout=open(self.out_path, "w"),  # noqa: SIM115 - closed with the process
            stderr=open(self.err_path, "w"),  # noqa: SIM115
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {}), MARK: self.mark},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def out(self) -> str:
        return self.out_path.read_text()

    def err(self) -> str:
        return self.err_path.read_text()

    def signal(self, sig: int) -> None:
        """To the launcher's process group, as a terminal sends Ctrl-C."""
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def processes(self) -> list[int]:
        return marked_pids(self.mark)

    def end(self) -> None:
        """End every process this command led to (whatever state the test left it in)."""
        for pid in [self.proc.pid, *self.processes()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        wait_for(lambda: not self.processes(), 10, "the test's processes to end")


def marked_pids(mark: str) -> list[int]:
    """Processes whose environment holds MARK=mark (launcher, agent, ranks)."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll `check` until it returns something true; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def only_run(runs: Path) -> Path | None:
    found = [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
    assert len(found) <= 1, found
    return found[0] if found else None


def logged_steps(runs: Path) -> int:
    """The last step in the event log of the one run in `runs` (0 before any)."""
    import json

    run = only_run(runs)
    if run is None or not (run / "events.jsonl").exists():
        return 0
    last = 0
    for line in (run / "events.jsonl").read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("type") == "steps":
            last = event["first_step"] + len(event["losses"]) - 1
    return last


def run_meta(run: Path) -> dict:
    return tomllib.loads((run / "run.toml").read_text())


def job_leftovers() -> list[str]:
    """torchdeck's and torchelastic's temp folders in this session's temp folder."""
    import tempfile

    root = Path(tempfile.gettempdir())
    return sorted(
        p.name for p in root.iterdir() if p.name.startswith(("torchdeck-job-", "torchelastic_"))
    )
