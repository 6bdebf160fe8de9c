"""The preset schema: which keys exist, their types, defaults and limits.

Torch-free on purpose: the app validates every preset at start-up and must not wait for
torch. `validate` turns a parsed preset into a fully resolved config (defaults filled in)
or raises ConfigError naming the file, the key and what was expected.
"""

from __future__ import annotations

import ast
import fnmatch
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError

NO_DEFAULT = object()


@dataclass(frozen=True)
class Field:
    kind: str  # int | float | bool | str | choice | list | table | layers | inits | expr
    default: Any = NO_DEFAULT
    choices: tuple[str, ...] = ()
    min: float | None = None
    min_exclusive: bool = False
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        noun = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "expr": "an expression string",
            "list": "a list",
            "table": "a table",
        }.get(self.kind, self.kind)
        if self.min is not None:
            op = ">" if self.min_exclusive else ">="
            bound = int(self.min) if float(self.min).is_integer() else self.min
            noun += f" {op} {bound}"
        return noun


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def check_value(fld: Field, value: Any) -> Any:
    """Return the value converted to the field's type, or raise ValueError(description)."""
    expected = f"expected {fld.describe()}, got {_type_name(value)} {value!r}"
    if fld.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(expected)
    elif fld.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(expected)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(expected)
    elif fld.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(expected)
    elif fld.kind in ("str", "expr"):
        if not isinstance(value, str):
            raise ValueError(expected)
        if fld.kind == "expr":
            check_expression(value)
    elif fld.kind == "choice":
        if not isinstance(value, str) or value not in fld.choices:
            raise ValueError(expected)
    elif fld.kind == "list":
        if not isinstance(value, list):
            raise ValueError(expected)
    elif fld.kind == "table":
        if not isinstance(value, dict):
            raise ValueError(expected)
    if fld.min is not None and fld.kind in ("int", "float"):
        too_small = value <= fld.min if fld.min_exclusive else value < fld.min
        if too_small:
            raise ValueError(expected)
    return value


# --- expressions (data formulas, report lines) ------------------------------------------

EXPR_FUNCTIONS = (
    "arange linspace where sin cos tan exp log sqrt abs relu tanh sigmoid clamp "
    "zeros_like ones_like max min sum mean prod norm"
).split()
EXPR_CONSTANTS = ("pi", "e")


def check_expression(text: str, names: tuple[str, ...] = ()) -> None:
    """Reject expressions that do not parse or use anything but arithmetic and known names."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"expression {text!r} does not parse: {err.msg}") from None
    allowed = set(EXPR_FUNCTIONS) | set(EXPR_CONSTANTS) | {"x", "p", "d"} | set(names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            raise ValueError(f"expression {text!r}: attribute access is not allowed")
        if isinstance(node, ast.Name) and node.id not in allowed:
            raise ValueError(
                f"expression {text!r}: unknown name {node.id!r} "
                f"(known: {', '.join(sorted(allowed))})"
            )


# --- layers and init rules -------------------------------------------------------------

_I, _F, _B = Field("int", min=1), Field("float"), Field("bool")
_I0 = Field("int", min=0)
_KERNEL = Field("int", min=1)

LAYERS: dict[str, dict[str, Field]] = {
    "Linear": {"in_features": _I, "out_features": _I, "bias": Field("bool", True)},
    "Conv2d": {
        "in_channels": _I,
        "out_channels": _I,
        "kernel_size": _KERNEL,
        "stride": Field("int", 1, min=1),
        "padding": Field("int", 0, min=0),
        "bias": Field("bool", True),
    },
    "ReLU": {},
    "LeakyReLU": {"negative_slope": Field("float", 0.01)},
    "Tanh": {},
    "Sigmoid": {},
    "GELU": {},
    "Softmax": {"dim": Field("int", -1)},
    "Dropout": {"p": Field("float", 0.5, min=0.0)},
    "Flatten": {"start_dim": Field("int", 1), "end_dim": Field("int", -1)},
    "AdaptiveAvgPool2d": {"output_size": _I},
    "MaxPool2d": {"kernel_size": _KERNEL, "stride": Field("int", 0, min=0)},
    "AvgPool2d": {"kernel_size": _KERNEL},
    "BatchNorm1d": {"num_features": _I},
    "BatchNorm2d": {"num_features": _I},
    "Identity": {},
}

INIT_DISTS: dict[str, dict[str, Field]] = {
    "normal": {"mean": Field("float", 0.0), "std": Field("float", 1.0, min=0.0)},
    "uniform": {"a": Field("float", 0.0), "b": Field("float", 1.0)},
    "constant": {"value": Field("float")},
    "zeros": {},
    "ones": {},
    "xavier_uniform": {"gain": Field("float", 1.0)},
    "xavier_normal": {"gain": Field("float", 1.0)},
    "kaiming_uniform": {"a": Field("float", 0.0)},
    "kaiming_normal": {"a": Field("float", 0.0)},
    "orthogonal": {"gain": Field("float", 1.0)},
}

BUILTIN_MODELS = ("legendre-p3",)

# --- data sources ------------------------------------------------------------------------

DATA_SOURCES: dict[str, dict[str, Field]] = {
    "formula": {
        "x": Field("expr", help="1-D inputs, e.g. 'arange(-20, 20, 2)'"),
        "y": Field("expr", help="targets as a function of x"),
    },
    "blobs": {
        "n_samples": Field("int", 1000, min=2),
        "centers": Field("int", 1, min=1),
        "n_features": Field("int", 2, min=2),
        "random_state": Field("int", 0),
        "transform": Field("list", []),
        "x_col": Field("int", 0, min=0),
        "y_col": Field("int", 1, min=0),
    },
    "digits": {
        "image": Field("bool", False),
        "test_fraction": Field("float", 0.2, min=0.0, min_exclusive=True),
        "split_seed": Field("int", 0),
        "scale": Field("float", 16.0, min=0.0, min_exclusive=True),
    },
    "teacher": {
        "in_features": Field("int", min=1),
        "out_features": Field("int", min=1),
        "steps_per_epoch": Field("int", 100, min=1),
    },
    "cifar10": {
        "root": Field("str", "data"),
        "mean": Field("list", [0.4914, 0.4822, 0.4465]),
        "std": Field("list", [0.2470, 0.2435, 0.2616]),
        "verify": Field("bool", False, help="check the md5 sums of the files"),
        "limit": Field("int", 0, min=0, help="use only the first N images (0: all)"),
    },
    "fixed": {"x": Field("list"), "y": Field("list")},
    "random": {
        "shape": Field("list", help="shape of one input, e.g. [3, 32, 32]"),
        "n_samples": Field("int", 1024, min=1),
        "classes": Field("int", 10, min=2, help="classification: labels 0..classes-1"),
        "targets": Field("int", 1, min=1, help="regression: outputs per sample"),
    },
}

LOSSES = ("mse", "sse", "half_mse", "half_sse", "l1", "cross_entropy")
OPTIMIZERS = ("sgd", "adam", "adamw")
DTYPES = ("float32", "float64")

OPTIM_FIELDS: dict[str, Field] = {
    "name": Field("choice", choices=OPTIMIZERS),
    "lr": Field("float", min=0.0, min_exclusive=True),
    "momentum": Field("float", 0.0, min=0.0),
    "dampening": Field("float", 0.0, min=0.0),
    "nesterov": Field("bool", False),
    "weight_decay": Field("float", 0.0, min=0.0),
    "betas": Field("list", [0.9, 0.999]),
    "eps": Field("float", 1e-8, min=0.0, min_exclusive=True),
}
OPTIM_ONLY = {
    "momentum": ("sgd",),
    "dampening": ("sgd",),
    "nesterov": ("sgd",),
    "betas": ("adam", "adamw"),
    "eps": ("adam", "adamw"),
}

TRAIN_FIELDS: dict[str, Field] = {
    "epochs": Field("int", 0, min=1),
    "steps": Field("int", 0, min=1),
    "batch_size": Field("int", min=1),
    "loss": Field("choice", choices=LOSSES),
    "seed": Field("int", 0, min=0),
    "device": Field("str", "auto"),
    "shuffle": Field("bool", True),
    "dtype": Field("choice", "float32", choices=DTYPES),
    "threads": Field("int", 0, min=0, help="torch threads on CPU (0: torch's default)"),
    "log_every_s": Field("float", 0.25, min=0.0, min_exclusive=True),
    "stats_every_s": Field("float", 1.0, min=0.0, min_exclusive=True),
    "checkpoint_every_s": Field("float", 30.0, min=0.0),
}

EVAL_FIELDS: dict[str, Field] = {
    "every_epochs": Field("int", 1, min=1),
    "batch_size": Field("int", 1000, min=1),
}

MODEL_FIELDS: dict[str, Field] = {
    "layers": Field("layers", []),
    "builtin": Field("choice", "", choices=BUILTIN_MODELS),
    "factory": Field("str", ""),
    "kwargs": Field("table", {}),
    "init": Field("inits", []),
}

TOP_FIELDS: dict[str, Field] = {
    "name": Field("str"),
    "title": Field("str", ""),
    "description": Field("str", ""),
    "task": Field("choice", choices=("regression", "classification")),
}
SECTIONS = ("data", "model", "optim", "train", "eval", "report")
REQUIRED_SECTIONS = ("data", "model", "optim", "train")


def section_fields(config: Mapping[str, Any], section: str) -> dict[str, Field]:
    """The fields a section may hold, given the rest of the config (data depends on source)."""
    if section == "data":
        source = config.get("data", {}).get("source")
        fields = {"source": Field("choice", choices=tuple(DATA_SOURCES))}
        fields.update(DATA_SOURCES.get(source, {}))
        return fields
    return {
        "model": MODEL_FIELDS,
        "optim": OPTIM_FIELDS,
        "train": TRAIN_FIELDS,
        "eval": EVAL_FIELDS,
    }.get(section, {})


def field_for(config: Mapping[str, Any], dotted: str) -> Field | None:
    """The schema field for a dotted key such as 'optim.lr', or None if there is none."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return TOP_FIELDS.get(parts[0])
    if len(parts) == 2 and parts[0] == "report":
        return Field("expr")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        return None
    return section_fields(config, parts[0]).get(parts[1])


class _Where:
    """Builds error messages that name the file and the key."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, key: str, problem: str) -> ConfigError:
        where = f"{self.origin}: " if self.origin else ""
        return ConfigError(f"{where}{key}: {problem}" if key else f"{where}{problem}")


def _check_table(
    where: _Where,
    prefix: str,
    table: Mapping[str, Any],
    fields: Mapping[str, Field],
    extra: Callable[[str, Any], Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        fld = fields.get(key)
        if fld is None:
            known = ", ".join(fields) or "none"
            raise where.fail(f"{prefix}{key}", f"unknown key (known keys: {known})")
        if extra is not None and fld.kind in ("layers", "inits"):
            out[key] = extra(key, value)
            continue
        try:
            out[key] = check_value(fld, value)
        except ValueError as err:
            raise where.fail(f"{prefix}{key}", str(err)) from None
    for key, fld in fields.items():
        if key in out:
            continue
        if fld.required:
            raise where.fail(f"{prefix}{key}", f"missing ({fld.describe()})")
        out[key] = list(fld.default) if isinstance(fld.default, list) else fld.default
    return out


def _check_layers(where: _Where, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise where.fail("[model] layers", f"expected a list of tables, got {_type_name(value)}")
    layers = []
    for i, layer in enumerate(value):
        key = f"[model] layers[{i}]"
        if not isinstance(layer, dict):
            raise where.fail(key, f'expected a table like {{type = "Linear", ...}}, got {layer!r}')
        kind = layer.get("type")
        if kind not in LAYERS:
            raise where.fail(f"{key}.type", f"unknown layer {kind!r} (known: {', '.join(LAYERS)})")
        args = {k: v for k, v in layer.items() if k != "type"}
        checked = _check_table(where, f"{key}.", args, LAYERS[kind])
        if kind == "MaxPool2d" and checked.get("stride") == 0:
            checked["stride"] = checked["kernel_size"]
        layers.append({"type": kind, **checked})
    return layers


def _check_inits(where: _Where, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise where.fail("[model] init", f"expected a list of tables, got {_type_name(value)}")
    rules = []
    for i, rule in enumerate(value):
        key = f"[model] init[{i}]"
        if not isinstance(rule, dict):
            raise where.fail(key, f"expected a table, got {rule!r}")
        dist = rule.get("dist")
        if dist not in INIT_DISTS:
            raise where.fail(
                f"{key}.dist", f"unknown init {dist!r} (known: {', '.join(INIT_DISTS)})"
            )
        fields = {"params": Field("str"), "dist": Field("str"), **INIT_DISTS[dist]}
        rules.append(_check_table(where, f"{key}.", rule, fields))
    return rules


def _check_number_list(where: _Where, key: str, value: Any, length: int | None = None) -> None:
    ok = isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if not ok or (length is not None and len(value) != length):
        what = f"a list of {length} numbers" if length else "a list of numbers"
        raise where.fail(key, f"expected {what}, got {value!r}")


def validate(raw: Mapping[str, Any], origin: str = "") -> dict[str, Any]:
    """Check a parsed preset and return the resolved config with every default filled in."""
    where = _Where(origin)
    for key in raw:
        if key not in TOP_FIELDS and key not in SECTIONS:
            known = ", ".join([*TOP_FIELDS, *(f"[{s}]" for s in SECTIONS)])
            raise where.fail(key, f"unknown key (known: {known})")
    top = _check_table(where, "", {k: v for k, v in raw.items() if k in TOP_FIELDS}, TOP_FIELDS)
    config: dict[str, Any] = dict(top)
    if not config["title"]:
        config["title"] = config["name"]
    for section in REQUIRED_SECTIONS:
        if section not in raw:
            raise where.fail(f"[{section}]", "missing section")
    for section in SECTIONS:
        if section not in raw:
            continue
        table = raw[section]
        if not isinstance(table, dict):
            raise where.fail(f"[{section}]", f"expected a table, got {_type_name(table)}")
        if section == "report":
            config["report"] = _check_table(
                where, "[report] ", table, {k: Field("expr") for k in table}
            )
            continue
        if section == "data" and "source" not in table:
            raise where.fail("[data] source", f"missing (one of {', '.join(DATA_SOURCES)})")

        def extra(key: str, value: Any) -> Any:
            return _check_layers(where, value) if key == "layers" else _check_inits(where, value)

        config[section] = _check_table(
            where, f"[{section}] ", table, section_fields(raw, section), extra
        )
    _cross_checks(where, config)
    return config


def _cross_checks(where: _Where, config: dict[str, Any]) -> None:
    model, optim, train, data = config["model"], config["optim"], config["train"], config["data"]
    given = [k for k in ("layers", "builtin", "factory") if model[k]]
    if len(given) != 1:
        raise where.fail("[model]", "give exactly one of layers, builtin or factory")
    if model["factory"] and ":" not in model["factory"]:
        raise where.fail("[model] factory", f"expected 'module:function', got {model['factory']!r}")
    for key, names in OPTIM_ONLY.items():
        default = OPTIM_FIELDS[key].default
        if optim[key] != default and optim["name"] not in names:
            raise where.fail(
                f"[optim] {key}", f"not used by {optim['name']} (only {', '.join(names)})"
            )
    _check_number_list(where, "[optim] betas", optim["betas"], 2)
    if bool(train["epochs"]) == bool(train["steps"]):
        raise where.fail("[train]", "give exactly one of epochs or steps")
    if config["task"] == "classification" and train["loss"] != "cross_entropy":
        raise where.fail("[train] loss", "a classification preset needs cross_entropy")
    if config["task"] == "regression" and train["loss"] == "cross_entropy":
        raise where.fail("[train] loss", "cross_entropy needs a classification task")
    check_device_name(train["device"], where, "[train] device")
    source = data["source"]
    if source == "cifar10":
        _check_number_list(where, "[data] mean", data["mean"])
        _check_number_list(where, "[data] std", data["std"])
    if source == "blobs" and data["transform"]:
        rows = data["transform"]
        n = data["n_features"]
        if not isinstance(rows, list) or len(rows) != n:
            raise where.fail("[data] transform", f"expected a {n}x{n} matrix, got {rows!r}")
        for row in rows:
            _check_number_list(where, "[data] transform", row, n)
    if source == "random":
        shape = data["shape"]
        if not shape or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape
        ):
            raise where.fail("[data] shape", f"expected a list of positive integers, got {shape!r}")
    if source == "fixed":
        if not data["x"]:
            raise where.fail("[data] x", "expected a non-empty list")
    for name, text in config.get("report", {}).items():
        try:
            check_expression(text)
        except ValueError as err:
            raise where.fail(f"[report] {name}", str(err)) from None
    for rule in model["init"]:
        if not rule["params"]:
            raise where.fail("[model] init", "params must be a glob such as '*.weight'")
        fnmatch.translate(rule["params"])


DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"


def check_device_name(name: str, where: _Where | None = None, key: str = "--device") -> None:
    """Syntax only; whether the device exists is checked when the run starts."""
    ok = name in ("auto", "cpu", "cuda", "mps") or (name.startswith("cuda:") and name[5:].isdigit())
    if not ok:
        problem = f"unknown device {name!r} (expected {DEVICE_HELP})"
        raise (where or _Where("")).fail(key, problem)
