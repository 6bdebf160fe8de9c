"""`torchdeck lr-find`: the range test on a fresh model, its suggestion and its curve."""

from __future__ import annotations

import math

import pytest
import torch


@pytest.fixture
def one_thread():
    """The 2-core CI box trains fastest on one thread; give the process its threads back."""
    before = torch.get_num_threads()
    yield "train.threads=1"
    torch.set_num_threads(before)


def test_digits_cnn_suggestion_within_a_decade_of_the_preset_lr(cli, one_thread, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("lr-find", "digits-cnn", "--set", one_thread)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("suggested lr:"))
    suggestion = float(line.split()[2])
    assert 1e-4 <= suggestion <= 1e-2, out  # the preset's Adam lr is 1e-3
    assert "rule: steepest" in line
    assert "lr (log scale)" in out and "*" in out  # the curve, drawn as text
    assert list(tmp_path.iterdir()) == []  # no run folder, no checkpoint


def test_lr_find_returns_plain_data_and_leaves_the_next_run_fresh(one_thread):
    from engine.build import build_parts
    from engine.lr_find import lr_find
    from engine.presets import resolve_config

    config = resolve_config("kink", [one_thread, "train.batch_size=20"])  # full batch
    fresh = [p.detach().clone() for p in build_parts(config)[2].parameters()]
    result = lr_find(config, start=1e-6, end=1.0, steps=60)
    assert len(result.lrs) == len(result.losses) == len(result.raw_losses) > 10
    assert all(isinstance(v, float) for v in result.lrs + result.losses)
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-6)
    assert result.stopped in ("diverged", "end") and result.rule.startswith("steepest")
    assert result.suggestion is not None and math.isfinite(result.suggestion)
    # a run built after the finder starts from the same initial weights as one built before
    again = [p.detach() for p in build_parts(config)[2].parameters()]
    assert all(torch.equal(a, b) for a, b in zip(fresh, again, strict=True))


@pytest.mark.parametrize(
    "args, words",
    [
        (["--start", "1", "--end", "0.1"], "expected 0 < --start < --end"),
        (["--steps", "3"], "--steps 3: expected at least 10"),
        (["--set", "optim.lr=oops"], "optim.lr"),
        ([], None),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args, words):
    if words is None:
        code, _, err = cli("lr-find", "no-such-preset")
        words = "unknown preset"
    else:
        code, _, err = cli("lr-find", "kink", *args)
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_tiny_noisy_batches_are_not_taken_for_an_explosion(one_thread):
    """kink trains on batches of 2 whose losses differ a hundredfold: the finder must not stop
    at the first big batch, and its suggestion lies within a decade of the preset's 1e-3."""
    from engine.lr_find import lr_find, smoothing_window
    from engine.presets import resolve_config

    config = resolve_config("kink", [one_thread])
    result = lr_find(config)
    assert len(result.lrs) > 150 and result.lrs[-1] > 0.1  # on until the lr is large
    assert result.suggestion is not None and 1e-4 <= result.suggestion <= 1e-2
    assert smoothing_window(200, 10) == 20 and smoothing_window(200, 23) == 10
