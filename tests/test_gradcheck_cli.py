"""`torchdeck gradcheck`: autograd vs central finite differences, and custom Functions."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from engine.presets import config_to_toml, resolve_config


def _bad_preset(tmp_path: Path) -> Path:
    config = resolve_config("kink")
    config["name"] = "bad-cube"
    config["model"] = {"factory": "bad_autograd:make"}  # tests/ is on sys.path (conftest)
    config.pop("report", None)
    path = tmp_path / "bad-cube.toml"
    path.write_text(config_to_toml(config))
    return path


def test_kink_passes(cli):
    code, out, err = cli("gradcheck", "kink")
    assert code == 0, out + err
    rows = [line for line in out.splitlines() if line.startswith(("0.", "2.", "4."))]
    assert [r.split()[0] for r in rows] == [
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"
    ]  # fmt: skip
    assert all(r.rstrip().endswith("pass") for r in rows)
    assert "all gradients match" in out


def test_a_wrong_custom_backward_fails_naming_the_layer_before_it(cli, tmp_path):
    code, out, err = cli("gradcheck", str(_bad_preset(tmp_path)))
    assert code == 1
    rows = {line.split()[0]: line for line in out.splitlines() if line[:2] in ("0.", "2.")}
    assert "FAIL" in rows["0.weight"] and "FAIL" in rows["0.bias"]  # before the Function
    assert rows["2.weight"].rstrip().endswith("pass")  # after it: right
    assert "bad_autograd.Cube" in out and "gradcheck failed" in out
    assert "parameters 0.weight, 0.bias (module 0 (Linear))" in err
    assert "custom autograd Function bad_autograd.Cube" in err


def test_the_check_is_plain_data():
    from engine.gradcheck import check_gradients

    report = check_gradients(resolve_config("legendre-sin"))
    assert report.ok
    names = [r.name for r in report.rows]
    assert names == ["a", "b", "c", "d", "engine.models.LegendreP3"]
    assert report.rows[-1].kind == "function"
    hand = {h.name: h for h in report.hand}
    assert set(hand) == {"a", "b", "c", "d"} and all(h.max_abs < 1e-9 for h in hand.values())


def test_dense_relu_shows_the_hand_derived_gradients(cli):
    code, out, err = cli("gradcheck", "dense-relu")
    assert code == 0, out + err
    assert "hand-derived gradients (numpy tutorial" in out
    hand = [line.split() for line in out.splitlines() if line.startswith(("0.weight ", "0.bias "))]
    assert len(hand) == 4  # the check's rows and the hand-derived rows


def test_bad_input_is_one_line_and_exit_2(cli, tmp_path):
    for args, words in [
        (["no-such-preset"], "unknown preset"),
        (["kink", "--set", "model.nope=1"], "unknown key"),
        ([str(tmp_path / "missing.toml")], "no such preset file"),
    ]:
        code, _, err = cli("gradcheck", *args)
        assert code == 2 and words in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    broken = tmp_path / "broken.toml"
    broken.write_text(tomli_w.dumps({"name": "x"}))
    code, _, err = cli("gradcheck", str(broken))
    assert code == 2 and len(err.strip().splitlines()) == 1
