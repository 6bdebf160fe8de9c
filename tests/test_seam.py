"""The engine stays free of the UI, and the training loop holds no per-step host sync."""

from __future__ import annotations

import subprocess
import sys

import torch


def test_engine_does_not_load_textual_or_rich():
    code = (
        "import sys, pkgutil, importlib, engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')]\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_what_the_app_uses_before_a_run_does_not_import_torch():
    code = (
        "import sys\n"
        "from engine.presets import discover_presets\n"
        "from engine import events, schema, errors, control, rundir, report, handle, export\n"
        "discover_presets()\n"
        "assert 'torch' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_no_host_sync_per_step(tmp_path, monkeypatch):
    """Count every tensor -> Python conversion during a 3000-step run: a handful, not 3000."""
    from engine.build import prepare_run
    from engine.presets import resolve_config
    from engine.train.loop import Trainer

    config = resolve_config(
        "kink",
        [
            "train.epochs=300",
            "train.log_every_s=1000.0",
            "train.stats_every_s=1000.0",
            "train.checkpoint_every_s=1000.0",
        ],
    )
    prep = prepare_run(config, tmp_path)
    calls = {"item": 0, "tolist": 0, "cpu": 0, "__bool__": 0, "__float__": 0}
    for name in calls:
        real = getattr(torch.Tensor, name)

        def counting(self, *a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    result = Trainer(prep).run()
    monkeypatch.undo()
    assert result.status == "finished" and result.step == 3000
    assert sum(calls.values()) < 50, calls
