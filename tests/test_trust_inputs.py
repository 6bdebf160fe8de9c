"""Issue 10, bugs 6 and 7: bad input is one line and exit 2; a damaged run folder never
breaks another command."""

from __future__ import annotations

import collections
import json
import os
import tomllib
from pathlib import Path

import pytest
import torch

from engine.presets import BUILTIN_DIR
from helpers import train

KINK = (BUILTIN_DIR / "kink.toml").read_text()
FIXED = (BUILTIN_DIR / "neuron-linear.toml").read_text()
FACTORY = KINK[: KINK.index("[model]")] + KINK[KINK.index("[optim]") :]


def one_line(result, *needles: str) -> str:
    code, out, err = result
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def factory_preset(tmp_path: Path, monkeypatch, module: str, source: str, target: str) -> Path:
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "factory.toml"
    path.write_text(FACTORY.replace("[optim]", f'[model]\nfactory = "{target}"\n\n[optim]'))
    return path


def nest(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "array" else "{a=" * depth + "1" + "}" * depth


# --- 6. bad input -------------------------------------------------------------------------------

FILE_CASES = {
    "binary": (b"\x00\xff\xfe\x80\x81garbage", ["not a text file"]),
    "deep-array": (KINK.replace("[optim]", "[optim]\nz = " + nest(900, "array")).encode(),
                   ["nested more than"]),
    "deep-table": (KINK.replace("[optim]", "[optim]\nz = " + nest(900, "table")).encode(),
                   ["nested more than"]),
    "type-list": (KINK.replace('{ type = "ReLU" }', '{ type = ["ReLU"] }', 1).encode(),
                  ["[model] layers[1].type"]),
    "source-table": (KINK.replace('source = "formula"', "source = {a=1}").encode(),
                     ["[data] source"]),
    "source-list": (KINK.replace('source = "formula"', "source = [1]").encode(),
                    ["[data] source"]),
    "dist-list": (KINK.replace('dist = "normal"', 'dist = ["normal"]').encode(),
                  ["[model] init[0].dist"]),
    "long-name": (KINK.replace('name = "kink"', f'name = "{"n" * 300}"').encode(),
                  ["name: at most 100 characters"]),
    "empty-y": (FIXED.replace("y = [5.0]", "y = []").encode(), ["[data] y", "non-empty"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_preset_file_is_one_line(tmp_path, cli, runs_dir, case):
    data, needles = FILE_CASES[case]
    path = tmp_path / "bad.toml"
    path.write_bytes(data)
    one_line(cli("train", str(path), "--runs-dir", str(runs_dir)), *needles)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.parametrize(
    "option, needle",
    [
        ("optim.lr=" + nest(900, "array"), "nested more than"),
        ("data.x=" + nest(900, "table"), "nested more than"),
        ("data.source={a=1}", "[data] source"),
        ("data.source=[1]", "[data] source"),
    ],
    ids=["deep-array", "deep-table", "source-table", "source-list"],
)
def test_bad_set_is_one_line(cli, runs_dir, option, needle):
    one_line(cli("train", "kink", "--set", option, "--runs-dir", str(runs_dir)), needle)


def test_resolve_config_of_a_dict_with_wrong_types_is_a_config_error():
    from engine.errors import ConfigError
    from engine.presets import resolve_config

    raw = tomllib.loads(KINK)
    for section, key, value in [("data", "source", {"a": 1}), ("data", "source", [1])]:
        bad = json.loads(json.dumps(raw))
        bad[section][key] = value
        with pytest.raises(ConfigError):
            resolve_config(bad)
    bad = json.loads(json.dumps(raw))
    bad["model"]["layers"][0]["type"] = ["Linear"]
    with pytest.raises(ConfigError):
        resolve_config(bad)


def test_utf8_bom_is_accepted(tmp_path, cli, runs_dir):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + KINK.encode())
    code, out, err = cli("train", str(path), "--set", "train.steps=3", "--runs-dir", str(runs_dir))
    assert code == 0, err


FACTORIES = {
    "raises-on-import": ("raise RuntimeError('boom at import')\n", "build", "boom at import"),
    "syntax-error": ("def build(:\n", "build", "SyntaxError"),
    "exits": ("import sys\n\ndef build():\n    sys.exit(3)\n", "build", "SystemExit: 3"),
    "no-parameters": (
        "import torch\n\ndef build():\n    return torch.nn.ReLU()\n",
        "build",
        "no parameters",
    ),
    "forward-raises": (
        "import torch\n\nclass M(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.w = torch.nn.Parameter(torch.zeros(1))\n\n"
        "    def forward(self, x):\n        raise KeyError('no forward')\n\n"
        "def build():\n    return M()\n",
        "build",
        "forward failed",
    ),
}


@pytest.mark.parametrize("case", list(FACTORIES))
def test_factory_errors_are_one_line(tmp_path, cli, runs_dir, monkeypatch, case):
    source, func, needle = FACTORIES[case]
    module = f"td_factory_{case.replace('-', '_')}"
    path = factory_preset(tmp_path, monkeypatch, module, source, f"{module}:{func}")
    one_line(cli("train", str(path), "--runs-dir", str(runs_dir)), "[model]", needle)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_factory_colon_alone_is_one_line(tmp_path, cli, runs_dir, monkeypatch):
    path = factory_preset(tmp_path, monkeypatch, "td_unused", "", ":")
    one_line(cli("train", str(path), "--runs-dir", str(runs_dir)), "[model] factory")


def test_nnodes_zero_is_one_line(cli, runs_dir):
    one_line(cli("train", "kink", "--nproc", "1", "--nnodes", "0", "--runs-dir", str(runs_dir)),
             "--nnodes 0")  # fmt: skip


# --- 7. damaged run folders ----------------------------------------------------------------------


def damage(runs: Path, name: str, text: bytes) -> Path:
    run = runs / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.toml").write_bytes(text)
    (run / "events.jsonl").write_text("")
    return run


def run_toml(status: str, pid: str) -> bytes:
    return (
        f'[run]\nid = "x"\npreset = "kink"\nstatus = "{status}"\nhost = "{os.uname().nodename}"\n'
        f"pid = {pid}\nstarted = 2026-01-01T00:00:00Z\n"
    ).encode()


def test_damaged_run_tomls_never_break_a_command(tmp_path, cli):
    import socket

    assert socket.gethostname() == os.uname().nodename
    runs = tmp_path / "runs"
    _, _, good = train("neuron-linear", runs)
    bad = {
        "20200101-000001-latin1": b'[run]\nid = "\xe9\xff"\nstatus = "finished"\n',
        "20200101-000002-run5": b"run = 5\n",
        "20200101-000003-pidabc": run_toml("running", '"abc"'),
        "20200101-000004-hugepid": run_toml("running", "99999999999999999999"),
        "20200101-000005-empty": b"",
        "20200101-000006-statuslist": b'[run]\nstatus = ["x"]\n',
    }
    for name, text in bad.items():
        damage(runs, name, text)
    code, out, err = cli("runs", "--runs-dir", str(runs))
    assert code == 0 and "Traceback" not in out + err and good.name in out
    for name in bad:
        for command in ("show", "resume", "export"):
            extra = ["--csv"] if command == "export" else []
            code, out, err = cli(command, name, *extra, "--runs-dir", str(runs))
            assert code in (0, 2) and "Traceback" not in out + err, (command, name, err)
            if code == 2:
                assert len(err.strip().splitlines()) == 1, (command, name, err)
        code, out, err = cli("attach", name, "--plain", "--runs-dir", str(runs))
        assert code in (1, 2) and "Traceback" not in out + err, (name, err)  # 1: gone


def test_wrong_types_in_events_do_not_break_export(tmp_path, cli):
    runs = tmp_path / "runs"
    _, _, run = train("neuron-linear", runs, "train.steps=5")
    with open(run / "events.jsonl", "a") as fh:
        for line in [
            {"type": "steps", "first_step": "6", "epoch": 6, "losses": [1.0], "lr": 0.1,
             "elapsed_s": 1.0, "samples_per_s": 1.0, "steps_per_s": 1.0},
            {"type": "steps", "first_step": 6, "epoch": 6, "losses": 3, "lr": 0.1,
             "elapsed_s": 1.0, "samples_per_s": 1.0, "steps_per_s": 1.0},
            {"type": "steps", "first_step": 6, "epoch": 6, "losses": ["a"], "lr": "x",
             "elapsed_s": 1.0, "samples_per_s": 1.0, "steps_per_s": 1.0},
            {"type": "epoch", "epoch": "7", "step": None, "train_loss": "x", "val_loss": None,
             "metrics": [1]},
            {"type": "run_started", "start_step": "zero"},
        ]:  # fmt: skip
            fh.write(json.dumps(line) + "\n")
    for extra in ([], ["--epochs"]):
        code, out, err = cli("export", run.name, "--csv", *extra, "--runs-dir", str(runs))
        assert code == 0 and "Traceback" not in out + err, err
    code, out, _ = cli("export", run.name, "--csv", "--runs-dir", str(runs))
    assert len(out.strip().splitlines()) == 1 + 5


def test_a_torch_file_that_is_not_a_checkpoint(tmp_path, cli):
    runs = tmp_path / "runs"
    _, _, run = train("neuron-linear", runs, "train.steps=5")
    text = (run / "run.toml").read_text().replace('status = "finished"', 'status = "stopped"')
    (run / "run.toml").write_text(text)
    for foreign in (collections.Counter(a=1), {"model": 3}, [torch.zeros(2)]):
        torch.save(foreign, run / "checkpoints" / "last.pt")
        code, out, err = cli("resume", run.name, "--set", "train.steps=9", "--runs-dir", str(runs))
        assert code == 2 and "unreadable checkpoint" in err and len(err.splitlines()) == 1, err
        code, out, err = cli("show", run.name, "--runs-dir", str(runs))
        assert code == 0 and "Traceback" not in out + err and "unreadable" in out, err


def test_resume_cleans_leftover_temp_files(tmp_path, cli):
    runs = tmp_path / "runs"
    _, _, run = train("neuron-linear", runs, "train.steps=5")
    text = (run / "run.toml").read_text().replace('status = "finished"', 'status = "stopped"')
    (run / "run.toml").write_text(text)
    (run / ".run.toml.12345.tmp").write_text("half")
    (run / "checkpoints" / ".last.pt.12345.tmp").write_bytes(b"half")
    code, _, err = cli("resume", run.name, "--set", "train.steps=9", "--runs-dir", str(runs))
    assert code == 0, err
    assert not list(run.rglob("*.tmp"))
