"""The `torchdeck` console script: the app, or one of the engine's headless commands.

It sits above both: the engine never imports the app, and the app never parses arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from engine.cli import build_parser, guarded, preset_dirs_of, run_command, runs_dir_of


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        return guarded(open_app, args)
    if args.command == "attach" and not args.plain and sys.stdout.isatty():
        return guarded(attach_app, args)
    if args.command in ("train", "resume", "replay") and sys.stdout.isatty():
        return guarded(run_with_progress_bar, args)
    return guarded(run_command, args)


def run_with_progress_bar(args: argparse.Namespace) -> int:
    """A headless run on a terminal: a progress bar (rich) instead of step lines."""
    import engine.cli
    from tui.progress import ProgressBar

    previous = engine.cli.make_printer
    engine.cli.make_printer = ProgressBar
    try:
        return run_command(args)
    finally:
        engine.cli.make_printer = previous


def open_app(args: argparse.Namespace) -> int:
    if not sys.stdout.isatty() and not os.environ.get("TORCHDECK_FORCE_APP"):
        print(
            "torchdeck: the app needs a terminal; use `torchdeck train PRESET` headless",
            file=sys.stderr,
        )
        return 2
    from tui.app import run_app

    return run_app(runs_dir=runs_dir_of(args), preset_dirs=preset_dirs_of(args))


def attach_app(args: argparse.Namespace) -> int:
    """`torchdeck attach RUN` on a terminal: the app, following that run."""
    from engine.rundir import find_run
    from tui.app import run_app

    run = find_run(args.run, runs_dir_of(args))
    run.read_meta()
    return run_app(runs_dir=runs_dir_of(args), attach=str(run.path))


if __name__ == "__main__":
    raise SystemExit(main())
