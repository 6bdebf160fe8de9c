"""Plain-text listings for the headless commands: presets, runs, show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.presets import discover_presets
from engine.rundir import RunDir, find_run, list_runs


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def print_presets(preset_dirs: list[str]) -> int:
    rows = []
    for info in discover_presets(preset_dirs):
        if info.error:
            rows.append([info.name, "BROKEN: " + info.error, "-", str(info.path)])
        else:
            rows.append([info.name, info.title, info.task, str(info.path)])
    print(table(rows, ["name", "title", "task", "file"]))
    return 0


def run_row(run: RunDir) -> list[str]:
    record = run.record(check_checkpoints=False)
    summary = record.summary
    best = summary.get("test_accuracy", summary.get("best_val_loss"))
    return [
        run.id,
        record.label,
        str(record.info.get("preset", "?")) if not record.damaged else "-",
        str(record.info.get("started", "-")),
        _short(summary.get("steps")),
        _short(summary.get("final_loss")),
        _short(best),
    ]


def print_runs(runs_dir: str | None) -> int:
    runs = list_runs(Path(runs_dir) if runs_dir else None)
    if not runs:
        print("no runs yet")
        return 0
    header = ["id", "status", "preset", "started", "steps", "final_loss", "best"]
    print(table([run_row(r) for r in runs], header))
    return 0


def print_show(ref: str, runs_dir: str | None) -> int:
    run = find_run(ref, Path(runs_dir) if runs_dir else None)
    meta = run.read_meta()
    info = meta.get("run", {})
    print(f"run {run.id}  ({run.path})")
    print(f"  status: {run.record(check_checkpoints=False).label}")
    for key in ("preset", "started", "ended", "device", "host", "replay_of"):
        if key in info:
            print(f"  {key}: {info[key]}")
    summary = meta.get("summary", {})
    if summary:
        print("summary:")
        for key, value in summary.items():
            if isinstance(value, dict):
                for name, v in value.items():
                    print(f"  {key}.{name}: {_short(v)}")
            else:
                print(f"  {key}: {_short(value)}")
    for change in meta.get("changes", []):
        print(
            f"  change at step {change['step']}: {change['key']} {change['old']} -> {change['new']}"
        )
    print_parameters(run)
    return 0


def print_parameters(run: RunDir) -> None:
    path = run.last_ckpt
    if not path.exists():
        print("parameters: no checkpoint yet")
        return
    import torch

    from engine.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
        state = ckpt["model"]
    except Exception as err:  # a damaged file must not crash `show`
        print(f"parameters: {path} is unreadable ({type(err).__name__}: {err})")
        return
    print(f"parameters (from {path.name}, step {ckpt.get('step', '?')}):")
    with torch.no_grad():
        for name, t in state.items():
            shape = "x".join(str(s) for s in t.shape) or "scalar"
            if t.numel() <= 16:
                values = [float(v) for v in t.flatten().tolist()]
                shown = (
                    repr(values[0])
                    if t.dim() == 0
                    else "[" + ", ".join(repr(v) for v in values) + "]"
                )
                print(f"  {name} ({shape}, {str(t.dtype).removeprefix('torch.')}): {shown}")
            else:
                f = t.double()
                print(
                    f"  {name} ({shape}, {str(t.dtype).removeprefix('torch.')}): "
                    f"mean {f.mean():.6g} std {f.std(correction=0):.6g} "
                    f"min {f.min():.6g} max {f.max():.6g}"
                )
