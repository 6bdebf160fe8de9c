"""The asynchronous face: start, follow, pause, resume, change lr, stop, from an event loop."""

from __future__ import annotations

import asyncio
import tomllib

import pytest

from engine.api import start_run
from engine.errors import ConfigError, DeviceError
from engine.presets import resolve_config


async def test_events_pause_resume_set_lr_stop(tmp_path):
    config = resolve_config("kink", ["train.epochs=100000", "train.log_every_s=0.05"])
    handle = await start_run(config, runs_dir=tmp_path)
    seen = []
    stopped = False
    async for event in handle.events():
        seen.append(event.type)
        if event.type == "steps" and "paused" not in seen and event.last_step > 100:
            handle.pause()
        elif event.type == "paused":
            meta = tomllib.loads((handle.run_dir / "run.toml").read_text())
            assert meta["run"]["status"] == "paused"
            handle.set_lr(0.0005)
            handle.resume()
        elif event.type == "hparam":
            assert (event.old, event.new) == (0.001, 0.0005)
        elif event.type == "steps" and "resumed" in seen and not stopped:
            handle.stop()
            stopped = True
    assert seen[0] == "run_started" and seen[-1] == "finished"
    assert seen.index("paused") < seen.index("hparam") < seen.index("resumed")
    result = await handle.wait()
    assert result.status == "stopped"
    meta = tomllib.loads((handle.run_dir / "run.toml").read_text())
    assert meta["run"]["status"] == "stopped"
    assert meta["changes"][0]["key"] == "optim.lr" and meta["changes"][0]["new"] == 0.0005
    assert (handle.run_dir / "checkpoints" / "last.pt").exists()


async def test_event_loop_stays_free_while_preparing_and_training(tmp_path):
    """Ticks of the asyncio loop keep coming while torch prepares and trains in the thread."""
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    config = resolve_config("digits-cnn", ["train.epochs=1"])
    handle = await start_run(config, runs_dir=tmp_path)
    result = await handle.wait()
    task.cancel()
    assert result.status == "finished"
    assert ticks > 5


async def test_bad_config_raises_before_anything_is_written(tmp_path):
    config = resolve_config("kink")
    config["train"]["device"] = "cuda:9"
    with pytest.raises(DeviceError):
        await start_run(config, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError):
        resolve_config("kink", ["optim.lr=0"])


async def test_failure_inside_training_is_reported(tmp_path):
    config = resolve_config("kink", ["train.epochs=5"])
    handle = await start_run(config, runs_dir=tmp_path)
    handle._thread.join()
    # a failing run: a model factory that breaks on the first backward
    config = resolve_config(
        {**resolve_config("kink"), "model": {"factory": "tests.broken_model:make"}},
        ["train.epochs=5"],
    )
    handle = await start_run(config, runs_dir=tmp_path)
    events = [e async for e in handle.events()]
    assert events[-1].type == "failed" and "boom" in events[-1].reason
    meta = tomllib.loads((handle.run_dir / "run.toml").read_text())
    assert meta["run"]["status"] == "failed" and "boom" in meta["summary"]["reason"]
