"""Checkpoints: atomic writes, weights_only loading, everything a resume needs."""

from __future__ import annotations

import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from helpers import train


def test_checkpoint_holds_what_resume_needs(tmp_path):
    _, _, run = train("digits-cnn", tmp_path, "train.epochs=1")
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "step", "epoch", "batch", "rng", "config"):
        assert key in ckpt
    assert ckpt["step"] == 45 and ckpt["epoch"] == 1 and ckpt["batch"] == 0
    assert isinstance(ckpt["rng"]["torch"], torch.Tensor)
    assert ckpt["config"]["name"] == "digits-cnn"
    assert (run / "checkpoints" / "best.pt").exists()
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.suffix != ".pt"]
    assert leftovers == []


def test_stream_checkpoint_holds_generator_state(tmp_path):
    _, _, run = train("dense-relu", tmp_path, "train.steps=50")
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert isinstance(ckpt["rng"]["data"]["generator"], torch.Tensor)


def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    good = {"model": {"w": torch.arange(4.0)}, "step": 1}
    save_checkpoint(path, good)

    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)  # part of the file is on disk ...
        raise OSError(28, "No space left on device")  # ... then the write dies

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": {"w": torch.zeros(4)}, "step": 2})
    monkeypatch.undo()

    again = torch.load(path, weights_only=True)
    assert again["step"] == 1 and torch.equal(again["model"]["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_killed_writer_leaves_previous_file(tmp_path):
    """A writer killed (SIGKILL) in the middle of writing a checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from engine.checkpoint import save_checkpoint
        real = torch.save
        def slow(obj, f, *a, **k):
            f.write(b"partial bytes of a new checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = slow
        save_checkpoint({str(path)!r}, {{"step": 2}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == 1
    assert os.path.exists(path)
