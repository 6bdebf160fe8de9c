"""Issue 13, the recipe keys: gradient clipping, accumulation, mixed precision, compile,
channels-last and early stopping; exact resume after kill -9 with all of them on; one line
and exit 2 for every bad value."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from test_kill_resume import DIGITS_MLP, SERVER, epoch_rows
from test_lifecycle import ROOT, assert_same_weights, final_weights, logged_losses

from engine.checkpoint import load_checkpoint
from helpers import losses, train

KINK = ["train.epochs=20", "train.log_every_s=0.002"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def digits(tmp_path) -> Path:
    path = tmp_path / "digits-mlp.toml"
    path.write_text(DIGITS_MLP)
    return path


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the digits preset sets 1 in this process


# --- (c) the knobs run and do what they say --------------------------------------------------


def test_clipping_counts_clipped_steps_per_epoch(tmp_path):
    _, events, run = train("kink", tmp_path, *KINK, "train.clip_grad_norm=1.0")
    epochs = [e for e in events if e.type == "epoch"]
    assert len(epochs) == 20 and all(0.0 <= e.metrics["clipped"] <= 1.0 for e in epochs)
    assert any(e.metrics["clipped"] > 0 for e in epochs)  # kink's early gradients are large
    summary = tomllib.loads((run / "run.toml").read_text())["summary"]
    total = sum(e.metrics["clipped"] * 10 for e in epochs) / 200
    assert summary["clipped_fraction"] == pytest.approx(total)
    # a threshold no gradient reaches: nothing clipped, and the same run as without it
    _, unclipped, _ = train("kink", tmp_path / "b", *KINK, "train.clip_grad_norm=1e9")
    _, plain, _ = train("kink", tmp_path / "c", *KINK)
    assert losses(unclipped) == losses(plain)
    assert all(e.metrics["clipped"] == 0 for e in unclipped if e.type == "epoch")


def test_clipping_bounds_the_gradient_norm(tmp_path):
    """What the step did: with max norm 0.01 no parameter moves by more than lr * 0.01."""
    from engine.build import prepare_run
    from engine.presets import resolve_config
    from engine.train.loop import Trainer

    config = resolve_config("kink", ["train.steps=1", "train.clip_grad_norm=0.01"])
    prep = prepare_run(config, tmp_path)
    before = [p.detach().clone() for p in prep.model.parameters()]
    Trainer(prep).run()
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(prep.model.parameters(),
                                                                 before, strict=True)])  # fmt: skip
    assert 0 < moved.norm() <= 0.001 * 0.01 * (1 + 1e-5)


def test_accumulation_equals_the_bigger_batch(tmp_path):
    """2 batches of 2 with accumulate = 2 make the update of one batch of 4 (mean losses;
    no shuffling, so the same samples), up to float rounding."""
    sets = [*KINK, "train.shuffle=false", "train.steps=10"]
    _, _, small = train("kink", tmp_path / "a", *sets, "train.accumulate=2")
    _, _, big = train("kink", tmp_path / "b", *sets[:-1], "train.steps=5", "train.batch_size=4")
    a, b = final_weights(small), final_weights(big)
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-7), name
    meta = tomllib.loads((small / "run.toml").read_text())
    assert meta["summary"]["steps"] == 10  # steps count batches


def test_start_line_shows_the_effective_batch(tmp_path, cli):
    sets = ["train.steps=4", "train.accumulate=4", 'schedule.name="cosine"']
    args = [a for s in sets for a in ("--set", s)]
    code, out, err = cli("train", "kink", *args, "--runs-dir", str(tmp_path))
    assert code == 0, err
    assert "recipe: schedule cosine, accumulate 4: effective batch 8" in out


def test_bf16_on_cpu_trains_and_repeats_bitwise(tmp_path, digits, keep_threads):
    sets = ["train.epochs=2", "train.precision=bf16"]
    _, a, run_a = train(str(digits), tmp_path / "a", *sets)
    _, b, run_b = train(str(digits), tmp_path / "b", *sets)
    _, fp32, _ = train(str(digits), tmp_path / "c", *sets[:1])
    assert losses(a) == losses(b)
    assert_same_weights(final_weights(run_a), final_weights(run_b))
    assert losses(a) != losses(fp32)  # autocast did something
    assert losses(a)[-1] < losses(a)[0]  # and it learns
    assert all(p.dtype == torch.float32 for p in final_weights(run_a).values())


@pytest.mark.slow
def test_compile_on_cpu_gives_the_eager_losses(tmp_path):
    """torch.compile on this box: the compiled kink trains like the eager one (inductor
    may fuse differently: equal up to float rounding)."""
    import shutil

    if not shutil.which("g++") and not shutil.which("c++"):
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    sets = ["train.steps=20", "train.log_every_s=0.002"]
    result, compiled, _ = train("kink", tmp_path / "a", *sets, "train.compile=true")
    assert result.status == "finished", getattr(result, "reason", "")
    _, eager, _ = train("kink", tmp_path / "b", *sets)
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_fp16_with_grad_scaler_on_cuda(tmp_path, digits, keep_threads):
    sets = ["train.epochs=2", "train.precision=fp16", "train.device=cuda"]
    result, events, run = train(str(digits), tmp_path / "a", *sets)
    assert result.status == "finished"
    assert losses(events)[-1] < losses(events)[0]
    scaler = load_checkpoint(run / "checkpoints" / "last.pt")["recipe"]["scaler"]
    assert scaler["scale"] > 0


@pytest.mark.gpu
@needs_cuda
def test_channels_last_on_cuda(tmp_path):
    sets = ["train.steps=20", "train.channels_last=true", "train.device=cuda"]
    result, events, _ = train("digits-cnn", tmp_path / "a", *sets)
    assert result.status == "finished"
    _, plain, _ = train("digits-cnn", tmp_path / "b", *sets[:1], "train.device=cuda")
    assert losses(events) == pytest.approx(losses(plain), rel=1e-3, abs=1e-4)


def test_channels_last_on_cpu_images(tmp_path):
    sets = ["train.steps=6", "train.channels_last=true", "train.log_every_s=0.002"]
    result, events, _ = train("digits-cnn", tmp_path / "a", *sets)
    assert result.status == "finished"
    _, plain, _ = train("digits-cnn", tmp_path / "b", *sets[:1], "train.log_every_s=0.002")
    assert losses(events) == pytest.approx(losses(plain), rel=1e-4, abs=1e-6)


# --- (e) early stopping --------------------------------------------------------------------

EARLY = ["train.epochs=10", "early_stop.patience=2", "early_stop.min_delta=0.05",
         "train.log_every_s=0.002", "train.checkpoint_every_s=0"]  # fmt: skip


def test_early_stop_ends_with_the_reason_and_the_best_weights(tmp_path, digits, cli,
                                                              keep_threads):  # fmt: skip
    sets = [*EARLY, "early_stop.patience=1", "early_stop.min_delta=0.1"]
    runs = tmp_path / "runs"
    code, out, err = cli("train", str(digits), *(a for s in sets for a in ("--set", s)),
                         "--runs-dir", str(runs))  # fmt: skip
    assert code == 0, err
    run = next(runs.iterdir())
    reason = "stopped early: val_loss did not improve by 0.1 for 1 evaluation"
    assert f"{reason}; the model is best.pt's" in out
    meta = tomllib.loads((run / "run.toml").read_text())
    assert meta["run"]["status"] == "finished"
    assert meta["summary"]["stopped_early"] == reason
    assert meta["summary"]["epochs"] < 10
    last = json.loads((run / "events.jsonl").read_text().splitlines()[-1])
    assert last["type"] == "finished" and last["summary"]["stopped_early"] == reason
    # the model it ends with is best.pt's, and best.pt holds the lowest test loss
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert_same_weights(final_weights(run), best["model"])
    val = [r[3] for r in epoch_rows(run)]
    assert best["progress"]["best"] == min(val) == meta["summary"]["best_val_loss"]
    # it ended: a resume says so (exit 2) rather than train one more epoch to stop again
    code, _, err = cli("resume", run.name, "--runs-dir", str(runs))
    assert code == 2 and f"run {run.name} ended: {reason}; replay it" in err, err


def test_early_stop_on_accuracy(tmp_path, digits, keep_threads):
    sets = ["train.epochs=12", 'early_stop.metric="accuracy"', "early_stop.patience=1",
            "early_stop.min_delta=0.02", "train.checkpoint_every_s=0"]  # fmt: skip
    result, events, run = train(str(digits), tmp_path, *sets)
    assert result.summary["stopped_early"].startswith("stopped early: accuracy did not improve")
    accs = [e.metrics["accuracy"] for e in events if e.type == "epoch"]
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["progress"]["best"] == -max(accs)  # best.pt follows the accuracy
    assert_same_weights(final_weights(run), best["model"])


# --- (b) kill -9 and resume, with a schedule, accumulation, clipping and early stopping ------

DIGITS_RECIPE = ['schedule.name="cosine"', "schedule.warmup_steps=5", "train.accumulate=3",
                 "train.clip_grad_norm=0.5", *EARLY, "early_stop.min_delta=0.12"]  # fmt: skip
# that run stops early after epoch 9 of 10 (best at 7); the kills below come at the 6th
# evaluation (one evaluation without improvement counted) and the 8th checkpoint
KINK_RECIPE = [*KINK, 'schedule.name="plateau"', "schedule.patience=1",
               "schedule.factor=0.5", "train.accumulate=3", "train.clip_grad_norm=2.0"]  # fmt: skip


@pytest.mark.slow
def test_kill_9_then_resume_with_the_recipe_is_bitwise_identical(tmp_path, digits, cli,
                                                                 keep_threads):  # fmt: skip
    kink = "kink"
    todo = [
        {"where": "eval", "preset": str(digits), "sets": DIGITS_RECIPE, "k": 6},
        {"where": "mid_epoch", "preset": str(digits), "k": 40,
         "sets": [*DIGITS_RECIPE, "train.checkpoint_every_s=0.005"]},
        {"where": "checkpoint_write", "preset": str(digits), "sets": DIGITS_RECIPE, "k": 8,
         "mode": "half"},
        {"where": "mid_epoch", "preset": kink, "k": 101,
         "sets": [*KINK_RECIPE, "train.checkpoint_every_s=0.01"]},
        {"where": "checkpoint_write", "preset": kink, "k": 7, "mode": "before_replace",
         "sets": [*KINK_RECIPE, "train.checkpoint_every_s=0"]},
    ]  # fmt: skip
    for i, case in enumerate(todo):
        case.setdefault("mode", "")
        case["runs"] = str(tmp_path / f"killed-{i}")
    proc = subprocess.run(
        [sys.executable, "-c", SERVER], input=json.dumps(todo), cwd=ROOT,
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(todo) and all(r["killed"] for r in results), results

    refs = {}
    for case in todo:
        key = (case["preset"], tuple(s for s in case["sets"] if "checkpoint_every" not in s))
        if key not in refs:
            _, events, run = train(case["preset"], tmp_path / f"ref-{len(refs)}", *case["sets"])
            epochs = [(e.epoch, e.step, e.train_loss, e.val_loss) for e in events
                      if e.type == "epoch"]  # fmt: skip
            meta = tomllib.loads((run / "run.toml").read_text())
            refs[key] = (losses(events), epochs, final_weights(run), meta["summary"])
        ref_losses, ref_epochs, ref_weights, ref_summary = refs[key]
        runs = Path(case["runs"])
        run = next(p for p in runs.iterdir() if p.is_dir())
        code, out, err = cli("resume", run.name, "--runs-dir", str(runs))
        assert code == 0, (case, err)
        meta = tomllib.loads((run / "run.toml").read_text())
        assert meta["run"]["status"] == "finished"
        assert logged_losses(run) == ref_losses, case
        assert epoch_rows(run) == ref_epochs, case
        assert_same_weights(final_weights(run), ref_weights)
        for key in ("stopped_early", "clipped_fraction", "steps", "best_val_loss"):
            assert meta["summary"].get(key) == ref_summary.get(key), (case, key)
    digits_summary = next(r[3] for k, r in refs.items() if k[0] == str(digits))
    assert digits_summary["stopped_early"].endswith("0.12 for 2 evaluations")
    assert digits_summary["epochs"] == 9


# --- (d) bad input: one line, exit 2, no run folder ----------------------------------------

BAD = [
    ('schedule.name="linear"', "[schedule] name: expected one of constant, step, exponential, "
     "cosine, onecycle, plateau, got a string 'linear'"),
    ("schedule.warmup_steps=-1", "[schedule] warmup_steps: expected an integer >= 0, got an "
     "integer -1"),
    ("schedule.min_lr=-0.1", "[schedule] min_lr: expected a number >= 0, got a number -0.1"),
    ("schedule.step_size=10", "[schedule] step_size: not used by constant (only step)"),
    ("schedule.gamma=0", "[schedule] gamma: expected a number > 0, got an integer 0"),
    ("schedule.max_lr=true", "[schedule] max_lr: expected a number >= 0, got a boolean True"),
    ("schedule.pct_start=1.0", "[schedule] pct_start: expected a number between 0 and 1 (both "
     "excluded), got 1.0"),
    ("schedule.patience=2", "[schedule] patience: not used by constant (only plateau)"),
    ("schedule.factor=0", "[schedule] factor: expected a number > 0, got an integer 0"),
    ("schedule.warmup=3", "unknown key 'schedule.warmup'"),
    ("train.clip_grad_norm=-1", "[train] clip_grad_norm: expected a number >= 0, got an "
     "integer -1"),
    ("train.accumulate=0", "[train] accumulate: expected an integer >= 1, got an integer 0"),
    ('train.precision="fp8"', "[train] precision: expected one of fp32, bf16, fp16, got a "
     "string 'fp8'"),
    ('train.compile="yes"', "[train] compile: expected true or false, got a string 'yes'"),
    ("train.channels_last=1", "[train] channels_last: expected true or false, got an integer 1"),
    ('early_stop.metric="loss"', "[early_stop] metric: expected one of val_loss, accuracy, got "
     "a string 'loss'"),
    ("early_stop.patience=0", "[early_stop] patience: expected an integer >= 1, got an "
     "integer 0"),
    ("early_stop.min_delta=-1.0", "[early_stop] min_delta: expected a number >= 0, got a "
     "number -1.0"),
]  # fmt: skip


@pytest.mark.parametrize(("setting", "message"), BAD, ids=[b[0].split("=")[0] for b in BAD])
def test_bad_recipe_values_one_line_exit_2(tmp_path, cli, setting, message):
    runs = tmp_path / "runs"
    code, out, err = cli("train", "digits-cnn", "--set", setting, "--runs-dir", str(runs))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert not runs.exists()


@pytest.mark.parametrize(
    ("preset", "sets", "message"),
    [
        ("kink", ["train.precision=fp16"],
         "[train] precision: fp16 (with GradScaler) needs a CUDA device, not cpu; use bf16 there"),
        ("kink", ["train.channels_last=true"],
         "[train] channels_last: needs 4-D inputs (images), these are 2-D"),
        ("kink", ["early_stop.patience=3"],
         "[early_stop]: needs an [eval] section: it watches the test split's metric"),
        ("kink", ["train.dtype=float64", "train.precision=bf16"],
         "[train] precision: bf16 autocast needs dtype float32, not float64"),
        ("kink", ['schedule.name="plateau"', "schedule.warmup_steps=5"],
         "[schedule] warmup_steps: not used by plateau (only constant, step, exponential, "
         "cosine)"),
        ("kink", ["schedule.factor=0.5"],
         "[schedule] factor: not used by constant (only plateau)"),
    ],
    ids=["fp16-cpu", "channels-last-2d", "early-stop-no-eval", "bf16-float64", "plateau-warmup",
         "factor-constant"],
)  # fmt: skip
def test_bad_recipe_combinations_one_line_exit_2(tmp_path, cli, preset, sets, message):
    runs = tmp_path / "runs"
    args = [a for s in sets for a in ("--set", s)]
    code, out, err = cli("train", preset, *args, "--device", "cpu", "--runs-dir", str(runs))
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert not runs.exists()


def test_early_stop_with_nproc_is_refused_before_a_run_folder(tmp_path, cli):
    runs = tmp_path / "runs"
    code, _, err = cli("train", "digits-cnn", "--set", "early_stop.patience=2", "--nproc", "2",
                       "--runs-dir", str(runs))  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "[early_stop] and a [schedule] plateau on [eval] need one process" in err
    assert not runs.exists()


def test_accuracy_early_stop_needs_classification(tmp_path):
    from engine.errors import ConfigError
    from engine.presets import resolve_config

    with pytest.raises(ConfigError, match="accuracy needs a classification task"):
        resolve_config("blobs-line", ["eval.every_epochs=1", 'early_stop.metric="accuracy"'])


def test_schema_lists_the_recipe_keys(cli):
    code, out, _ = cli("schema")
    assert code == 0
    defs = json.loads(out)["$defs"]
    assert {"clip_grad_norm", "accumulate", "precision", "compile", "channels_last"} <= set(
        defs["Train"]["properties"]
    )
    assert sorted(defs["Schedule"]["properties"]["name"]["enum"]) == sorted([
        "constant", "step", "exponential", "cosine", "onecycle", "plateau"])  # fmt: skip
    assert set(defs["EarlyStop"]["properties"]) == {"metric", "patience", "min_delta"}


# --- the app's form ----------------------------------------------------------------------------


async def test_form_edits_the_recipe_at_80x24(tmp_path):
    from textual.widgets import Input, Select

    from tui.app import make_app
    from tui.panes.params_form import ParamsForm
    from tui_fakes import FakeEngine

    app = make_app(runs_dir=tmp_path / "runs", engine=FakeEngine(), clock=lambda: 100.0,
                   tick_s=60.0, background_delay_s=0.0)  # fmt: skip
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        form = app.query_one(ParamsForm)
        assert form.validate() and not form.overrides  # untouched: no [schedule] appears
        form.query_one("#f-schedule", Select).value = "cosine"
        form.query_one("#f-warmup", Input).value = "5"
        form.query_one("#f-clip", Input).value = "1.5"
        form.query_one("#f-accum", Input).value = "2"
        form.query_one("#f-precision", Select).value = "bf16"
        await pilot.pause()
        assert form.validate(), form.errors
        assert form.config["schedule"]["name"] == "cosine"
        assert form.config["schedule"]["warmup_steps"] == 5
        train = form.config["train"]
        assert (train["clip_grad_norm"], train["accumulate"], train["precision"]) == (
            1.5, 2, "bf16")  # fmt: skip
        # onecycle has its own warm-up: the field goes away and the key back to 0
        form.query_one("#f-schedule", Select).value = "onecycle"
        await pilot.pause()
        assert not form.query_one("#r-warmup").display
        assert form.validate(), form.errors
        assert form.config["schedule"]["warmup_steps"] == 0
        form.query_one("#f-accum", Input).value = "0"
        await pilot.pause()
        assert not form.validate()
        assert any(e.startswith("accumulate: expected an integer >= 1") for e in form.errors)
        # at 80x24 the form scrolls to its last row, and the presets keep their room
        row = form.query_one("#r-precision")
        form.scroll_to_widget(row, animate=False)
        await pilot.pause()
        assert form.region.contains_region(row.region), (form.region, row.region)
        assert app.query_one("#presets").region.height >= 7


def test_json_schema_knows_which_schedule_uses_which_key():
    import tomllib as toml

    import jsonschema

    from engine import schema

    validator = jsonschema.Draft202012Validator(schema.json_schema())
    base = (Path(ROOT) / "presets" / "kink.toml").read_text()

    def ok(extra: str) -> bool:
        return validator.is_valid(toml.loads(base + "\n" + extra))

    assert ok("[schedule]\nwarmup_steps = 5")  # constant by default: a warm-up is fine
    assert ok('[schedule]\nname = "plateau"\npatience = 3')
    assert not ok("[schedule]\npatience = 3")
    assert not ok('[schedule]\nname = "onecycle"\nwarmup_steps = 5')
    assert ok("[early_stop]\npatience = 3") and not ok("[early_stop]\npatience = 0")
