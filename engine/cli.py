"""The `torchdeck` command. Without a subcommand it opens the app; the rest is headless.

Anything a user can get wrong ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from engine.errors import TorchdeckError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage plus error
        self.exit(2, f"torchdeck: {message} (see torchdeck --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="torchdeck", description="Train PyTorch models from a terminal UI.")
    parser.add_argument(
        "--runs-dir", help="where runs are saved (default ./runs or $TORCHDECK_RUNS)"
    )
    parser.add_argument(
        "--presets",
        action="append",
        default=[],
        metavar="DIR",
        help="an extra folder of preset files (repeatable)",
    )
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train a preset headless")
    train.add_argument("preset", help="a preset name or a preset .toml file")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a preset key, e.g. --set optim.lr=0.01 (repeatable)",
    )
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    train.add_argument("--runs-dir", dest="sub_runs_dir", help=argparse.SUPPRESS)
    train.add_argument(
        "--presets", action="append", default=[], dest="sub_presets", help=argparse.SUPPRESS
    )

    sub.add_parser("presets", help="list presets")

    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--runs-dir", dest="sub_runs_dir", help=argparse.SUPPRESS)

    show = sub.add_parser("show", help="a run's summary and parameters")
    show.add_argument("run", help="run id, unique prefix of one, or path")
    show.add_argument("--runs-dir", dest="sub_runs_dir", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs_dir = getattr(args, "sub_runs_dir", None) or args.runs_dir
    preset_dirs = [*args.presets, *getattr(args, "sub_presets", [])]
    try:
        if args.command == "train":
            return cmd_train(args.preset, args.overrides, args.device, runs_dir, preset_dirs)
        if args.command == "presets":
            from engine.report import print_presets

            return print_presets(preset_dirs)
        if args.command == "runs":
            from engine.report import print_runs

            return print_runs(runs_dir)
        if args.command == "show":
            from engine.report import print_show

            return print_show(args.run, runs_dir)
        return open_app(runs_dir, preset_dirs)
    except TorchdeckError as err:
        print(f"torchdeck: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("torchdeck: interrupted", file=sys.stderr)
        return 130


def cmd_train(
    preset: str,
    overrides: list[str],
    device: str | None,
    runs_dir: str | None,
    preset_dirs: list[str],
) -> int:
    from engine.presets import apply_overrides, resolve_config

    config = resolve_config(preset, overrides, preset_dirs)
    option = "[train] device"
    if device is not None:
        from engine.schema import check_device_name

        check_device_name(device)
        config = apply_overrides(config, {"train.device": device})
        option = "--device"

    from engine.api import run_sync
    from engine.console import ConsolePrinter
    from engine.events import Failed
    from engine.trainer import Control

    control = Control()

    def on_signal(signum: int, frame: object) -> None:
        print(
            f"torchdeck: {signal.Signals(signum).name}: stopping after this step "
            "(checkpoint, status stopped)",
            file=sys.stderr,
            flush=True,
        )
        control.stop()
        signal.signal(signum, signal.SIG_DFL)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = run_sync(
            config, runs_dir, sinks=[ConsolePrinter()], control=control, device_option=option
        )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 1 if isinstance(result, Failed) else 0


def open_app(runs_dir: str | None, preset_dirs: list[str]) -> int:
    if not sys.stdout.isatty() and not os.environ.get("TORCHDECK_FORCE_APP"):
        print(
            "torchdeck: the app needs a terminal; use `torchdeck train PRESET` headless",
            file=sys.stderr,
        )
        return 2
    from tui.app import run_app

    return run_app(runs_dir=runs_dir, preset_dirs=preset_dirs)


if __name__ == "__main__":
    raise SystemExit(main())
