"""The preset schema: its name lists match the torch-side code, its JSON Schema accepts every
built-in preset and rejects the broken ones, and its messages name the file, key and problem."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine import schema
from engine.errors import ConfigError
from engine.presets import BUILTIN_DIR, config_to_toml, resolve_config

PRESET_FILES = sorted(BUILTIN_DIR.glob("*.toml"))
KINK = (BUILTIN_DIR / "kink.toml").read_text()
ROOT = Path(__file__).resolve().parent.parent


def load(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    doc = schema.json_schema()
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


# --- the schema's names are the code's names ----------------------------------------------


def test_name_lists_match_the_torch_side_code():
    import torch

    from engine import data, exprs, losses, models

    assert schema.LOSSES == tuple(losses.LOSSES)
    assert schema.DTYPES == tuple(data.DTYPES)
    assert schema.BUILTIN_MODELS == tuple(models.BUILTINS)
    names = set(exprs.namespace(torch.float64))
    assert set(schema.EXPR_FUNCTIONS) | set(schema.EXPR_CONSTANTS) == names
    for source in schema.DATA_SOURCES:
        assert callable(getattr(data, f"_{source}", None)), source


def _resolved_layer(name: str) -> dict[str, Any]:
    """The layer with every required argument set to 2, resolved by the schema."""
    fields = schema.LAYERS[name]
    layer = {"type": name, **{k: 2 for k, f in fields.items() if f.required}}
    raw = load(KINK)
    raw["model"] = {"layers": [layer]}
    return schema.validate(raw)["model"]["layers"][0]


@pytest.mark.parametrize("name", list(schema.LAYERS))
def test_every_layer_is_a_torch_module_with_those_arguments(name):
    import torch.nn as nn

    from engine.models import build_model

    cls = getattr(nn, name)
    accepted = set(inspect.signature(cls).parameters)
    assert set(schema.LAYERS[name]) <= accepted
    model_cfg = {"layers": [_resolved_layer(name)], "builtin": "", "factory": "", "kwargs": {}}
    model = build_model({**model_cfg, "init": []})
    assert isinstance(model[0], cls)


@pytest.mark.parametrize("dist", list(schema.INIT_DISTS))
def test_every_init_rule_applies(dist):
    import torch

    from engine.models import apply_init

    rule = {"params": "weight", "dist": dist}
    if "value" in schema.INIT_DISTS[dist]:
        rule["value"] = 0.5
    raw = load(KINK)
    raw["model"]["init"] = [rule]
    resolved = schema.validate(raw)["model"]["init"][0]
    apply_init(torch.nn.Linear(3, 3), [resolved])


@pytest.mark.parametrize("name", schema.OPTIMIZERS)
def test_every_optimiser_builds_with_its_fields(name):
    import torch

    from engine.optim import build_optimizer

    config = resolve_config("kink", [f"optim.name={name}"])
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], config["optim"])
    accepted = set(inspect.signature(type(opt)).parameters)
    used = {k for k, only in schema.OPTIM_ONLY.items() if name in only}
    assert used <= accepted
    assert {"lr", "weight_decay"} <= accepted


def test_not_given_placeholders_are_the_struct_defaults():
    for section, placeholders in schema.NOT_GIVEN.items():
        fields = schema.section_fields({}, section)
        for key, value in placeholders.items():
            assert fields[key].default == value


def test_form_fields_come_from_the_structs():
    assert schema.OPTIM_FIELDS["lr"].describe() == "a number > 0"
    assert schema.OPTIM_FIELDS["momentum"].default == 0.0
    assert schema.TRAIN_FIELDS["batch_size"].describe() == "an integer >= 1"
    assert schema.TRAIN_FIELDS["loss"].choices == schema.LOSSES
    assert schema.OPTIM_FIELDS["name"].choices == ("sgd", "adam", "adamw")
    assert schema.TOP_FIELDS["task"].choices == ("regression", "classification")
    assert list(schema.OPTIM_FIELDS)[:3] == ["name", "lr", "momentum"]
    assert schema.REQUIRED_SECTIONS == ("data", "model", "optim", "train")
    assert schema.OPTIM_ONLY["betas"] == ("adam", "adamw")


# --- JSON Schema ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_json_schema_accepts_every_builtin_preset(validator, path):
    raw = tomllib.loads(path.read_text())
    errors = [e.message for e in validator.iter_errors(raw)]
    assert errors == []
    schema.validate(raw)


def _kink(old: str, new: str) -> str:
    assert old in KINK
    return KINK.replace(old, new, 1)


# The structural breakages tests/test_cli_errors.py and the app tests use (as files and as
# --set values), with where the JSON Schema should find the problem.
BROKEN: dict[str, tuple[str, list[Any]]] = {
    "unknown-key": (_kink("lr = 0.001", "lr = 0.001\nlrr = 1"), ["optim"]),
    "wrong-type": (_kink("batch_size = 2", 'batch_size = "two"'), ["train", "batch_size"]),
    "missing-section": (KINK[: KINK.index("[optim]")] + KINK[KINK.index("[train]") :], []),
    "unknown-layer": (_kink('type = "ReLU"', 'type = "Relu"'), ["model", "layers", 1]),
    "unknown-loss": (_kink('loss = "half_mse"', 'loss = "huber"'), ["train", "loss"]),
    "unknown-optimiser": (_kink('name = "sgd"', 'name = "rmsprop"'), ["optim", "name"]),
    "negative-lr": (_kink("lr = 0.001", "lr = -0.001"), ["optim", "lr"]),
    "zero-lr": (_kink("lr = 0.001", "lr = 0"), ["optim", "lr"]),
    "batch-zero": (_kink("batch_size = 2", "batch_size = 0"), ["train", "batch_size"]),
    "epochs-abc": (_kink("epochs = ", 'epochs = "abc"\n# '), ["train", "epochs"]),
    "epochs-float": (_kink("epochs = ", "epochs = 2.5\n# "), ["train", "epochs"]),
    "momentum-yes": (_kink("lr = 0.001", 'lr = 0.001\nmomentum = "yes"'), ["optim", "momentum"]),
    "lr-fast": (_kink("lr = 0.001", 'lr = "fast"'), ["optim", "lr"]),
    "unknown-top-key": ("colour = 'red'\n" + KINK, []),
    "unknown-source": (_kink('source = "formula"', 'source = "parquet"'), ["data"]),
    "layer-unknown-arg": (
        _kink('{ type = "ReLU" }', '{ type = "ReLU", inplace = true }'),
        ["model", "layers", 1],
    ),
    "momentum-with-adam": (
        _kink('name = "sgd"', 'name = "adam"\nmomentum = 0.9'),
        ["optim", "momentum"],
    ),
    "epochs-and-steps": (_kink("epochs = ", "steps = 10\nepochs = "), ["train"]),
    "no-model": (KINK[: KINK.index("layers = [")] + KINK[KINK.index("init = [") :], ["model"]),
    "betas-length": (_kink('name = "sgd"', 'name = "adam"\nbetas = [0.9]'), ["optim", "betas"]),
    "bad-device": (_kink("[train]", '[train]\ndevice = "tpu"'), ["train", "device"]),
    "broken-app-preset": ('name = "broken"\ntask = "regression"\n[optim]\nlr = "fast"\n', []),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_json_schema_rejects_broken_presets(validator, name):
    text, where = BROKEN[name]
    raw = load(text)
    paths = [list(e.absolute_path) for e in validator.iter_errors(raw)]
    assert where in paths, f"{name}: JSON Schema errors at {paths}, expected one at {where}"
    with pytest.raises(ConfigError):
        schema.validate(raw)


def test_schema_command_prints_valid_json():
    proc = subprocess.run(
        [sys.executable, "-m", "tui.cli", "schema"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["$schema"].startswith("https://json-schema.org/")
    assert doc["title"] == "torchdeck preset"
    jsonschema.Draft202012Validator.check_schema(doc)
    jsonschema.validate(load(KINK), doc)


def test_schema_import_is_torch_free():
    code = "import sys, engine.presets; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


# --- msgspec errors in today's words ----------------------------------------------------------

KNOWN_LAYERS = ", ".join(schema.LAYERS)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            ('{ type = "ReLU" }', '{ type = "ReLU", inplace = true }'),
            "[model] layers[1].inplace: unknown key (known keys: none)",
        ),
        (
            ("in_features = 1, ", ""),
            "[model] layers[0].in_features: missing (an integer >= 1)",
        ),
        (
            ('{ type = "ReLU" }', "{}"),
            f"[model] layers[1].type: unknown layer None (known: {KNOWN_LAYERS})",
        ),
        (
            ('{ type = "ReLU" }', '"ReLU"'),
            "[model] layers[1]: expected a table like {type = \"Linear\", ...}, got 'ReLU'",
        ),
        (
            ("std = 0.3", "std = -0.3"),
            "[model] init[0].std: expected a number >= 0, got a number -0.3",
        ),
        (
            ('dist = "normal"', 'dist = "gauss"'),
            "[model] init[0].dist: unknown init 'gauss' (known: "
            + ", ".join(schema.INIT_DISTS)
            + ")",
        ),
        (
            ('source = "formula"', 'source = "parquet"'),
            f"[data] source: expected one of {', '.join(schema.DATA_SOURCES)}, "
            "got a string 'parquet'",
        ),
        (("lr = 0.001", "lr = inf"), "[optim] lr: expected a number > 0, got a number inf"),
        (("seed = 1", "seed = true"), "[train] seed: expected an integer >= 0, got a boolean True"),
        (
            ('"w1*w2*w3" =', 'w = "w.x"\n"w1*w2*w3" ='),
            "[report] w: expression 'w.x': attribute access is not allowed",
        ),
        (('"w1*w2*w3" =', 'w = 1\n"w1*w2*w3" ='), "[report] w: expected an expression string"),
        (
            ('name = "sgd"', 'name = "adam"\nbetas = [0.9]'),
            "[optim] betas: expected a list of 2 numbers, got [0.9]",
        ),
        (
            ("[train]", "[eval]\nevery_epochs = 0\n[train]"),
            "[eval] every_epochs: expected an integer >= 1, got an integer 0",
        ),
        (("[train]", "[train]\nthreads = -1"), "[train] threads: expected an integer >= 0"),
        (("[model]", "[model]\nbuiltin = 'legendre-p3'"), "[model]: give exactly one of layers"),
    ],
)
def test_messages_name_the_file_and_key(edit, message):
    with pytest.raises(ConfigError) as err:
        schema.validate(load(_kink(*edit)), origin="kink.toml")
    assert str(err.value).startswith(f"kink.toml: {message}"), str(err.value)


def test_resolved_config_keeps_the_file_order_then_the_defaults():
    raw = load(KINK)
    config = schema.validate(raw)
    assert list(config) == ["name", "title", "description", "task", *raw_sections(raw)]
    assert list(config["train"])[: len(raw["train"])] == list(raw["train"])
    assert list(config["model"]["layers"][0]) == ["type", "in_features", "out_features", "bias"]
    assert schema.validate(tomllib.loads(config_to_toml(config))) == config  # round trip


def raw_sections(raw: dict[str, Any]) -> list[str]:
    return [s for s in schema.SECTIONS if s in raw]
