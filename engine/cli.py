"""The `torchdeck` command line: the parser and the headless commands.

The console script (tui/cli.py) opens the app where a command wants one and hands every
other command to `run_command`. Anything a user can get wrong ends in one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from engine.errors import TorchdeckError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage plus error
        self.exit(2, f"torchdeck: {message} (see torchdeck --help)\n")


def _common(p: argparse.ArgumentParser, presets: bool = False) -> None:
    # accepted after the subcommand too: `torchdeck train kink --runs-dir DIR`
    p.add_argument("--runs-dir", dest="sub_runs_dir", help=argparse.SUPPRESS)
    if presets:
        p.add_argument(
            "--presets", action="append", default=[], dest="sub_presets", help=argparse.SUPPRESS
        )


def _sets(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help=f"override a key of {what}, e.g. --set optim.lr=0.01 (repeatable)",
    )


def _distributed(p: argparse.ArgumentParser) -> None:
    dist = p.add_argument_group("several processes (torchrun + DistributedDataParallel)")
    dist.add_argument("--nproc", type=int, help="processes on this machine (one per GPU)")
    dist.add_argument("--nnodes", type=int, default=1, help="machines taking part")
    dist.add_argument("--node-rank", type=int, default=0, help="this machine's index")
    dist.add_argument("--master-addr", help="address of the machine with node rank 0")
    dist.add_argument("--master-port", type=int, help="port on that machine")


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

    train = sub.add_parser("train", help="train a preset headless (or --detach)")
    train.add_argument("preset", help="a preset name or a preset .toml file")
    _sets(train, "the preset")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    train.add_argument(
        "--detach",
        action="store_true",
        help="train in the background, independent of this terminal",
    )
    _distributed(train)
    _common(train, presets=True)

    sub.add_parser("presets", help="list presets")
    _common(sub.add_parser("runs", help="list runs (and which are alive)"))

    show = sub.add_parser("show", help="a run's summary and parameters")
    show.add_argument("run", help="run id, unique prefix of one, or path")
    _common(show)

    resume = sub.add_parser("resume", help="continue a stopped, killed or crashed run")
    resume.add_argument("run")
    _sets(resume, "the run (optim.lr, train.epochs/steps, train.device, intervals)")
    resume.add_argument(
        "--from",
        dest="source",
        choices=["auto", "last", "best", "fresh"],
        default="auto",
        help="checkpoint to continue from (auto: best.pt for a diverged run, else last.pt; "
        "fresh: none, again from step 0)",
    )
    resume.add_argument("--detach", action="store_true", help="continue in the background")
    resume.add_argument("--device", help="auto, cpu or cuda (with --nproc)")
    _distributed(resume)
    _common(resume)

    replay = sub.add_parser("replay", help="a new run with a run's config and live changes")
    replay.add_argument("run")
    _sets(replay, "the recorded config")
    replay.add_argument("--detach", action="store_true", help="train in the background")
    _common(replay)

    attach = sub.add_parser("attach", help="follow a run: its history so far, then live")
    attach.add_argument("run")
    attach.add_argument("--plain", action="store_true", help="print lines instead of the app")
    _common(attach)

    sub.add_parser(
        "schema",
        help="print the preset JSON Schema (for editors: `torchdeck schema > preset.schema.json`)",
    )

    export = sub.add_parser("export", help="a run's step (or epoch) metrics as CSV or JSON")
    export.add_argument("run")
    export_format = export.add_mutually_exclusive_group(required=True)
    export_format.add_argument("--csv", action="store_true", help="CSV with a header line")
    export_format.add_argument("--json", action="store_true", help="JSON Lines: an object a line")
    export.add_argument(
        "--epochs", action="store_true", help="a row per epoch (train/val loss, accuracy, lr)"
    )
    export.add_argument("-o", "--output", help="file to write (default: stdout)")
    _common(export)
    from engine.control_cli import add_parsers as add_control_parsers

    add_control_parsers(sub, _common)  # pause, unpause, stop, set

    sweep = sub.add_parser("sweep", help="one run per combination of --grid values")
    sweep.add_argument("target", nargs="+", metavar="PRESET|resume ID|show ID")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="values of a config key to try (repeatable: every combination)",
    )
    _sets(sweep, "the preset, for every run")
    sweep.add_argument("--parallel", type=int, default=1, help="runs at a time (one per GPU)")
    sweep.add_argument("--foreground", action="store_true", help="run here, then the table")
    sweep.add_argument("--sort", help="n, final_loss, best_val_loss or test_accuracy")
    _common(sweep, presets=True)
    sweeps = sub.add_parser("sweeps", help="list sweeps, or one sweep's comparison table")
    sweeps.add_argument("sweep", nargs="?")
    sweeps.add_argument("--sort", help="n, final_loss, best_val_loss or test_accuracy")
    _common(sweeps)
    queue = sub.add_parser("queue", help="waiting runs of sweeps: list, move, cancel")
    queue.add_argument("action", nargs="*", metavar="move SWEEP:N up|down|first | cancel SWEEP[:N]")
    _common(queue)

    lr_find = sub.add_parser("lr-find", help="learning-rate range test on a fresh model")
    lr_find.add_argument("preset", help="a preset name or a preset .toml file")
    _sets(lr_find, "the preset")
    lr_find.add_argument("--start", type=float, default=1e-7, help="first lr (1e-7)")
    lr_find.add_argument("--end", type=float, default=10.0, help="last lr (10)")
    lr_find.add_argument("--steps", type=int, default=200, help="steps (200)")
    _common(lr_find, presets=True)
    gradcheck = sub.add_parser("gradcheck", help="autograd vs finite differences, float64")
    gradcheck.add_argument("preset", help="a preset name or a preset .toml file")
    _sets(gradcheck, "the preset")
    _common(gradcheck, presets=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The headless commands only (`python -m engine.cli ...`); the app is tui/cli.py's."""
    return guarded(run_command, build_parser().parse_args(argv))


def guarded(fn: Callable[..., int], *args: Any) -> int:
    """Run a command; a user's mistake (TorchdeckError) becomes one line and its exit code."""
    try:
        return fn(*args)
    except TorchdeckError as err:
        print(f"torchdeck: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("torchdeck: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `torchdeck export RUN --csv | head`: the reader is done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def runs_dir_of(args: argparse.Namespace) -> str | None:
    return getattr(args, "sub_runs_dir", None) or args.runs_dir


def preset_dirs_of(args: argparse.Namespace) -> list[str]:
    return [*args.presets, *getattr(args, "sub_presets", [])]


def run_command(args: argparse.Namespace) -> int:
    command = args.command
    runs_dir, preset_dirs = runs_dir_of(args), preset_dirs_of(args)
    if command == "train":
        return cmd_train(args, runs_dir, preset_dirs)
    if command in ("resume", "replay"):
        from engine.jobs import ReplayJob, ResumeJob

        if command == "replay":
            return run_job(ReplayJob(args.run, runs_dir, tuple(args.overrides)), args.detach)
        job = ResumeJob(args.run, runs_dir, tuple(args.overrides), args.source)
        if args.nproc is not None:
            return cmd_resume_distributed(args, job)
        return run_job(job, args.detach)
    if command == "presets":
        from engine.report import print_presets

        return print_presets(preset_dirs)
    if command == "runs":
        from engine.report import print_runs

        return print_runs(runs_dir)
    if command == "show":
        from engine.report import print_show

        return print_show(args.run, runs_dir)
    if command == "schema":
        import json

        from engine.schema import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    if command == "attach":
        return cmd_attach_plain(args.run, runs_dir)
    if command == "export":
        from engine.export import cmd_export

        fmt = "json" if args.json else "csv"
        return cmd_export(args.run, runs_dir, args.output, fmt, args.epochs)
    if command in ("pause", "unpause", "stop", "set"):
        from engine import control_cli

        return control_cli.run(args, runs_dir)
    if command in ("sweep", "sweeps", "queue"):
        from engine import sweep

        if command == "sweeps":
            return sweep.cmd_sweeps(args.sweep, args.sort, runs_dir)
        if command == "queue":
            return sweep.cmd_queue(args.action, runs_dir)
        return sweep.cmd_sweep(args.target, args.grid, args.overrides, args.parallel,
                               args.foreground, args.sort, runs_dir, preset_dirs)  # fmt: skip
    if command == "lr-find":
        from engine.lr_find import cmd_lr_find

        return cmd_lr_find(args.preset, args.overrides, preset_dirs, args.start, args.end,
                           args.steps)  # fmt: skip
    if command == "gradcheck":
        from engine.gradcheck import cmd_gradcheck

        return cmd_gradcheck(args.preset, args.overrides, preset_dirs)
    print("torchdeck: the app is not part of the engine; run the `torchdeck` command",
          file=sys.stderr)  # fmt: skip
    return 2


def cmd_train(args: argparse.Namespace, runs_dir: str | None, preset_dirs: list[str]) -> int:
    from engine.presets import apply_overrides, resolve_config

    config = resolve_config(args.preset, args.overrides, preset_dirs)
    option = "[train] device"
    if args.device is not None:
        from engine.schema import check_device_name

        check_device_name(args.device)
        config = apply_overrides(config, {"train.device": args.device})
        option = "--device"
    from engine.jobs import TrainJob

    if args.nproc is not None:
        dist_args = _check_distributed(args, config, config["train"]["device"])
        return run_distributed(args, TrainJob(config, runs_dir), dist_args)
    return run_job(TrainJob(config, runs_dir, option), args.detach)


def _check_distributed(args: argparse.Namespace, config: dict, device_name: str) -> dict:
    """One-line errors for what cannot run distributed; returns torchrun's options."""
    from engine.devices import resolve_device
    from engine.errors import ConfigError
    from engine.procs.distributed import per_rank_batch

    if args.nproc < 1:
        raise ConfigError(f"--nproc {args.nproc}: expected 1 or more processes")
    if args.nnodes < 1:
        raise ConfigError(f"--nnodes {args.nnodes}: expected 1 or more machines")
    if config["data"]["source"] == "teacher":
        raise ConfigError("--nproc: the teacher stream draws its batches in one process only")
    plateau = (config.get("schedule") or {}).get("name") == "plateau" and config.get("eval")
    if config.get("early_stop") or plateau:  # only rank 0 evaluates
        raise ConfigError(
            "--nproc: [early_stop] and a [schedule] plateau on [eval] need one process"
        )
    per_rank_batch(config["train"]["batch_size"], args.nproc * args.nnodes)
    if resolve_device(device_name, "--device").type == "mps":
        raise ConfigError("--nproc: distributed training runs on cuda (nccl) or cpu (gloo)")
    return {
        "nnodes": args.nnodes,
        "node_rank": args.node_rank,
        "master_addr": args.master_addr,
        "master_port": args.master_port,
    }


def cmd_resume_distributed(args: argparse.Namespace, job: Any) -> int:
    """Continue any run (one process or several) in N processes."""
    from engine.errors import RunDirError
    from engine.rundir import find_run

    config = find_run(args.run, job.runs_dir).record().config
    if "train" not in config or "data" not in config:
        raise RunDirError(f"run {args.run}: run.toml has no [config] to resume")
    device = args.device or config["train"].get("device", "auto")
    dist_args = _check_distributed(args, config, device)
    return run_distributed(args, dataclasses.replace(job, device=device), dist_args)


def run_distributed(args: argparse.Namespace, job: Any, dist_args: dict[str, Any]) -> int:
    """A job in N processes under torchrun: here, or detached in its own session."""
    from engine.jobs import job_to_dict

    if args.detach:
        from engine.procs.worker import spawn

        request = {"job": job_to_dict(job), "nproc": args.nproc, "dist_args": dist_args}
        reply = spawn(request, module="engine.procs.launch")
        return report_detached(reply["run_id"], reply["run_dir"], reply["pid"])
    from engine.procs.launch import launch

    return launch(job_to_dict(job), args.nproc, dist_args)


def report_detached(run_id: str, run_dir: Any, pid: int) -> int:
    print(
        f"run {run_id} is training in the background (pid {pid}): "
        f"{run_dir}\nfollow it with: torchdeck attach {run_id}"
    )
    return 0


# The sink a headless run prints through: None is engine.console.ConsolePrinter (plain
# lines); the console script sets a progress bar here on a terminal (tui/progress.py).
make_printer: Callable[[], Callable[[Any], None]] | None = None


def plain_printer(**kwargs: Any) -> Callable[[Any], None]:
    """engine.console.ConsolePrinter(**kwargs), for sinks outside the engine to print
    the same lines (a progress bar prints them above itself: write=, step_lines=False)."""
    from engine.console import ConsolePrinter

    return ConsolePrinter(**kwargs)


def run_job(
    job: Any, detach: bool, printer: Callable[[], Callable[[Any], None]] | None = None
) -> int:
    """Run a train/resume/replay job here (headless, printing through `printer()`, by
    default `make_printer` or plain lines) or in a detached worker."""
    from engine.jobs import start_detached

    if detach:
        started = start_detached(job)
        return report_detached(started.run_id, started.run_dir, started.pid)

    sink = (printer or make_printer or plain_printer)()
    try:
        return _run_here(job, sink)
    finally:
        close = getattr(sink, "close", None)
        if close is not None:
            close()


def _run_here(job: Any, sink: Callable[[Any], None]) -> int:
    from engine.jobs import prepare

    trainer = prepare(job, sinks=[sink])
    if trainer.notice:
        print(f"torchdeck: {trainer.notice}", file=sys.stderr, flush=True)

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        print(f"torchdeck: {name}: stopping after this step (checkpoint, status stopped)",
              file=sys.stderr, flush=True)  # fmt: skip
        trainer.control.stop()
        signal.signal(signum, signal.SIG_DFL)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = trainer.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if result.type == "failed":
        return 1
    return 3 if getattr(result, "status", "") == "diverged" else 0


def cmd_attach_plain(ref: str, runs_dir: str | None) -> int:
    """Follow a run as plain lines: its history so far as a summary, then live, until it
    ends."""
    import asyncio

    from engine.console import ConsolePrinter
    from engine.events import History
    from engine.handle import FollowHandle
    from engine.rundir import find_run
    from engine.summary import print_history

    run = find_run(ref, runs_dir)
    run.read_meta()  # a clear error for a folder that is not a run
    printer = ConsolePrinter(every_s=2.0)

    async def follow() -> int:
        last = None
        async for event in FollowHandle(run.path, history="summary").events():
            if isinstance(event, History):  # the history so far, in a few lines
                last = print_history(event, printer)
                continue
            printer(event)
            last = event
        return 0 if last is not None and last.type == "finished" else 1

    return asyncio.run(follow())


if __name__ == "__main__":
    raise SystemExit(main())
