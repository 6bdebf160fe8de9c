"""torchrun's agent for one node, as the launcher (engine/procs/launch.py) starts it:

    python -m engine.procs.agent TORCHRUN-ARGS...

It is torch.distributed.run with two additions: it dies with the launcher (SIGTERM when
the launcher's process exits: torchrun then ends its ranks), and when the launcher is gone
it removes the job folder (TORCHDECK_JOB_DIR, which also holds torchelastic's own temp
folders: TMPDIR points there), so a killed launcher leaves nothing in /tmp.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys

from engine.procs.lifeline import die_with_parent, env_pid


def _raise(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    launcher = env_pid("TORCHDECK_LAUNCHER_PID")
    job_dir = os.environ.get("TORCHDECK_JOB_DIR")
    # torchrun installs its own handlers once the ranks start; until then a signal ends us
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher decides what Ctrl-C means
    die_with_parent(signal.SIGTERM, launcher)
    os.environ["TORCHDECK_AGENT_PID"] = str(os.getpid())  # the ranks die with this process
    try:
        from torch.distributed.run import main as torchrun

        torchrun(argv)
        return 0
    finally:
        if job_dir and launcher is not None and os.getppid() != launcher:
            shutil.rmtree(job_dir, ignore_errors=True)  # nobody else is left to do it


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
