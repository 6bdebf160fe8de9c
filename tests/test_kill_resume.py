"""Issue 10: kill -9 a training process at 20 seeded random moments (before the first
checkpoint, mid-epoch, during a checkpoint write, during evaluation), resume each, and
require the same per-step losses, per-epoch means and final weights, bit for bit, as an
uninterrupted run.

One helper process imports torch once and forks a child per case (before any torch op,
so the children start clean); each child trains and SIGKILLs itself at its moment."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from test_lifecycle import ROOT, assert_same_weights, final_weights, logged_losses

from engine.export import iter_epoch_rows
from engine.presets import BUILTIN_DIR
from engine.rundir import RunDir
from helpers import losses, train

pytestmark = pytest.mark.slow

SERVER = textwrap.dedent(
    """
    import json, os, signal, sys
    import sklearn.datasets  # noqa: F401 (loaded once, before the forks)
    from engine.presets import resolve_config
    from engine.build import prepare_run
    from engine.train.loop import Trainer
    import engine.train.checkpointer as checkpointer
    from engine.atomic import atomic_write_bytes
    import torch
    import torch._dynamo  # noqa: F401 (what an optimiser imports on first use: seconds, once)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def child(case):
        prep = prepare_run(resolve_config(case["preset"], case["sets"]), case["runs"])
        where, k, spe = case["where"], case["k"], prep.data.steps_per_epoch
        seen = {"ckpt": 0}

        def killer(event):
            if event.type == "checkpoint" and event.kind == "last":
                seen["ckpt"] += 1
            if event.type != "steps" or event.last_step < k:
                return
            if where == "before_checkpoint" or (
                where == "mid_epoch" and seen["ckpt"] and event.last_step % spe
            ):
                die()

        if where == "checkpoint_write":
            calls = {"n": 0}

            def save_checkpoint(path, payload):
                calls["n"] += 1
                if calls["n"] < k:
                    return real_save(path, payload)

                def write(fh):
                    if case["mode"] == "half":
                        fh.write(b"PK\\x03\\x04 half a checkpoint")
                        fh.flush()
                        die()
                    torch.save(payload, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                    die()  # written, not yet renamed over the old one

                atomic_write_bytes(path, write)

            real_save = checkpointer.save_checkpoint
            checkpointer.save_checkpoint = save_checkpoint
        trainer = Trainer(prep, sinks=[killer])
        if where == "eval":
            real, calls = trainer.evaluate, {"n": 0}

            def evaluate():
                calls["n"] += 1
                if calls["n"] == k:
                    die()
                return real()

            trainer.evaluate = evaluate
        trainer.run()

    for case in json.loads(sys.stdin.read()):
        pid = os.fork()
        if pid == 0:
            try:
                child(case)
            finally:
                os._exit(0)  # not killed: the parent sees exit 0
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"runs": case["runs"], "killed": os.WIFSIGNALED(status)
                          and os.WTERMSIG(status) == signal.SIGKILL}), flush=True)
    """
)

DIGITS_MLP = """name = "digits-mlp"
task = "classification"

[data]
source = "digits"

[model]
layers = [
    { type = "Linear", in_features = 64, out_features = 32 },
    { type = "ReLU" },
    { type = "Dropout", p = 0.25 },
    { type = "Linear", in_features = 32, out_features = 10 },
]

[optim]
name = "adam"
lr = 0.003

[train]
epochs = 4
batch_size = 64
loss = "cross_entropy"
seed = 3
threads = 1  # a tiny model: one thread is fastest, and the same in every process

[eval]
every_epochs = 1
"""

KINK_SETS = ["train.epochs=20", "train.log_every_s=0.002"]
DIGITS_SETS = ["train.log_every_s=0.002", "train.checkpoint_every_s=0"]
KINDS = ["before_checkpoint", "mid_epoch", "checkpoint_write", "eval"]


def cases(tmp_path: Path) -> list[dict]:
    """20 kill moments from a fixed seed: five of each kind."""
    rng = random.Random(20261123)
    digits = tmp_path / "digits-mlp.toml"
    digits.write_text(DIGITS_MLP)
    kink = str(BUILTIN_DIR / "kink.toml")
    out = []
    for i in range(20):
        where = KINDS[i % 4]
        case = {"where": where, "runs": str(tmp_path / f"killed-{i:02d}-{where}"), "mode": ""}
        if where == "eval":
            case.update(preset=str(digits), sets=DIGITS_SETS, k=rng.randint(1, 4))
        elif where == "checkpoint_write":
            sets = [*KINK_SETS, "train.checkpoint_every_s=0"]
            mode = rng.choice(["half", "before_replace"])
            case.update(preset=kink, sets=sets, k=rng.randint(1, 19), mode=mode)
        elif where == "mid_epoch":
            sets = [*KINK_SETS, "train.checkpoint_every_s=0.02"]
            case.update(preset=kink, sets=sets, k=rng.randint(30, 195))
        else:
            sets = [*KINK_SETS, "train.checkpoint_every_s=1000"]
            case.update(preset=kink, sets=sets, k=rng.randint(1, 199))
        out.append(case)
    return out


def epoch_rows(run: Path) -> list[tuple]:
    rows = iter_epoch_rows(RunDir(run))
    return [(r["epoch"], r["step"], r["train_loss"], r["val_loss"]) for r in rows]


@pytest.fixture
def keep_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the digits preset sets 1 in this process


def test_kill_9_at_20_moments_then_resume_is_bitwise_identical(tmp_path, cli, keep_threads):
    todo = cases(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", SERVER], input=json.dumps(todo), cwd=ROOT,
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == 20 and all(r["killed"] for r in results), results

    refs = {}
    for preset, sets in ((todo[0]["preset"], KINK_SETS), (todo[3]["preset"], DIGITS_SETS)):
        _, events, run = train(preset, tmp_path / f"ref-{Path(preset).stem}", *sets)
        epochs = [(e.epoch, e.step, e.train_loss, e.val_loss) for e in events if e.type == "epoch"]
        refs[preset] = (losses(events), epochs, final_weights(run))

    identical = 0
    for case in todo:
        runs = Path(case["runs"])
        run = next(p for p in runs.iterdir() if p.is_dir())
        meta = tomllib.loads((run / "run.toml").read_text())
        assert meta["run"]["status"] == "running", case  # killed: nothing said "ended"
        code, out, err = cli("resume", run.name, "--runs-dir", str(runs))
        assert code == 0, (case, err)
        ref_losses, ref_epochs, ref_weights = refs[case["preset"]]
        assert tomllib.loads((run / "run.toml").read_text())["run"]["status"] == "finished"
        assert logged_losses(run) == ref_losses, case
        assert epoch_rows(run) == ref_epochs, case
        assert_same_weights(final_weights(run), ref_weights)
        assert not list(run.rglob("*.tmp")), case
        identical += 1
    assert identical == 20
    assert signal.SIGKILL  # every case above died by it (results[...]["killed"])
