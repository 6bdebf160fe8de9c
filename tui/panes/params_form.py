"""The hyperparameters form: typed inputs made from the selected preset, validated as you type.

The form's result is the preset's resolved config with the edits applied as overrides
(engine.presets.apply_overrides), so the engine's own validation has the last word and a
cross-field problem (e.g. momentum with adam) shows up here, before Start.
"""

from __future__ import annotations

import copy
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static

from engine.errors import ConfigError
from engine.presets import apply_overrides
from engine.schema import (
    LOSSES,
    OPTIM_FIELDS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULE_FIELDS,
    SCHEDULE_ONLY,
    SCHEDULES,
    TRAIN_FIELDS,
    check_value,
)
from tui.sweep_form import describe as describe_sweep
from tui.sweep_form import parse_listed

# (config key, label, input id)
TEXT_FIELDS = (
    ("optim.lr", "lr", "f-lr"),
    ("optim.momentum", "momentum", "f-momentum"),
    ("train.batch_size", "batch size", "f-batch"),
    ("train.seed", "seed", "f-seed"),
    # the recipe, below the device (the form scrolls where the screen is short)
    ("schedule.warmup_steps", "warm-up", "f-warmup"),
    ("train.clip_grad_norm", "clip norm", "f-clip"),
    ("train.accumulate", "accumulate", "f-accum"),
)
RECIPE_TEXT = TEXT_FIELDS[4:]
LABELS = {"optim.name": "optimiser", "train.loss": "loss", "train.device": "device",
          "schedule.name": "schedule", "train.precision": "precision",
          "length": "length", **{key: label for key, label, _ in TEXT_FIELDS}}
SGD_ONLY = ("momentum", "dampening", "nesterov")
ADAM_ONLY = ("betas", "eps")


def _field(key: str):
    section, name = key.split(".")
    fields = {"optim": OPTIM_FIELDS, "schedule": SCHEDULE_FIELDS}.get(section, TRAIN_FIELDS)
    return fields[name]


def _current(config: dict[str, Any], key: str) -> Any:
    """A key's value in a resolved config; a section it leaves out holds the defaults."""
    section, name = key.split(".")
    return config.get(section, {}).get(name, _field(key).default)


def parse_value(key: str, text: str) -> Any:
    """The typed value of a text field, or ValueError with a short reason."""
    fld = _field(key)
    text = text.strip()
    if not text:
        raise ValueError(f"expected {fld.describe()}")
    try:
        value: Any = int(text) if fld.kind == "int" else float(text)
    except ValueError:
        raise ValueError(f"expected {fld.describe()}, got {text!r}") from None
    try:
        return check_value(fld, value)
    except ValueError:
        raise ValueError(f"expected {fld.describe()}, got {text}") from None


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _row(label: str, *widgets: Any, row_id: str) -> Horizontal:
    return Horizontal(Label(label, classes="field-label"), *widgets, classes="field", id=row_id)


class ParamsForm(VerticalScroll, can_focus=False):
    DEFAULT_CSS = """
    ParamsForm {
        max-height: 70%;
    }
    """

    class Changed(Message):
        """The form was re-validated; `valid` says whether Start may run."""

        def __init__(self, valid: bool) -> None:
            super().__init__()
            self.valid = valid

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Hyperparameters"
        self.preset: dict[str, Any] | None = None
        self.config: dict[str, Any] | None = None  # validated result, None when invalid
        self.overrides: dict[str, Any] = {}
        self.errors: list[str] = []
        self.sweep_values: dict[str, list[Any]] = {}  # a list in a field: Start sweeps it
        self.devices: list[str] | None = None  # None until a worker has asked torch
        self.preset_name = ""  # the preset shown (or whose run is shown)
        self.source = "preset"  # "preset", or "run <id>": a run's own config is shown

    def compose(self) -> ComposeResult:
        opts = [(name, name) for name in OPTIMIZERS]
        yield _row("optimiser", Select(opts, allow_blank=False, compact=True, id="f-optim"),
                   row_id="r-optim")
        for _key, label, wid in TEXT_FIELDS[:3]:
            yield _row(label, Input(compact=True, id=wid), row_id=f"r-{wid[2:]}")
        unit = Select([("epochs", "epochs"), ("steps", "steps")], allow_blank=False,
                      compact=True, id="f-unit")
        yield _row("length", unit, Input(compact=True, id="f-length"), row_id="r-length")
        yield _row("loss", Select([(n, n) for n in LOSSES], allow_blank=False, compact=True,
                                  id="f-loss"), row_id="r-loss")
        yield _row("seed", Input(compact=True, id="f-seed"), row_id="r-seed")
        yield _row("device", Select([("auto", "auto")], allow_blank=False, compact=True,
                                    id="f-device"), row_id="r-device")
        yield _row("schedule", Select([(n, n) for n in SCHEDULES], allow_blank=False,
                                      compact=True, id="f-schedule"), row_id="r-schedule")
        for _key, label, wid in RECIPE_TEXT:
            yield _row(label, Input(compact=True, id=wid), row_id=f"r-{wid[2:]}")
        yield _row("precision", Select([(n, n) for n in PRECISIONS], allow_blank=False,
                                       compact=True, id="f-precision"), row_id="r-precision")
        with Horizontal(id="form-buttons"):
            yield Button("Start", id="start-button", variant="success", compact=True)
            yield Button("Save preset", id="save-button", compact=True)
        yield Static(id="form-errors")

    # --- filling in -------------------------------------------------------------------------
    def load(self, config: dict[str, Any] | None, name: str = "",
             source: str = "preset") -> None:
        """Show a preset's values (None: a broken preset; the form is disabled), or with
        `source` "run <id>", the config a run was started with."""
        self.preset = copy.deepcopy(config) if config is not None else None
        self.source = source
        if config is not None:
            self.preset_name = name or str(config.get("name", ""))
        title = "Hyperparameters" if source == "preset" else f"Hyperparameters of {source}"
        if self.border_title != title:
            self.border_title = title
        self.disabled = config is None
        if config is None:
            self.config = None
            self.errors = ["the selected preset is broken (see its error above)"]
            self.query_one("#start-button", Button).disabled = True
            self.query_one("#save-button", Button).disabled = True
            self._show_errors()
            self.post_message(self.Changed(False))
            return
        optim, train = config["optim"], config["train"]
        self.query_one("#f-optim", Select).value = optim["name"]
        self.query_one("#f-lr", Input).value = _fmt(optim["lr"])
        self.query_one("#f-momentum", Input).value = _fmt(optim["momentum"])
        self.query_one("#f-batch", Input).value = str(train["batch_size"])
        unit = "steps" if train["steps"] else "epochs"
        self.query_one("#f-unit", Select).value = unit
        self.query_one("#f-length", Input).value = str(train[unit])
        classify = config["task"] == "classification"
        losses = [n for n in LOSSES if (n == "cross_entropy") == classify]
        loss = self.query_one("#f-loss", Select)
        loss.set_options([(n, n) for n in losses])
        loss.value = train["loss"]
        self.query_one("#f-seed", Input).value = str(train["seed"])
        self._fill_devices(train["device"])
        self.query_one("#f-schedule", Select).value = _current(config, "schedule.name")
        for key, _label, wid in RECIPE_TEXT:
            self.query_one(f"#{wid}", Input).value = _fmt(_current(config, key))
        self.query_one("#f-precision", Select).value = train.get("precision", "fp32")
        self.validate()

    def follow_run_lr(self, lr: float) -> None:
        """A live lr change of the run the form shows: the form follows it, unless edited."""
        if self.preset is None or not self.source.startswith("run ") or self.overrides:
            return
        self.preset["optim"]["lr"] = lr
        self.query_one("#f-lr", Input).value = _fmt(lr)
        self.validate()

    def set_devices(self, devices: list[str]) -> None:
        self.devices = list(devices)
        current = self.query_one("#f-device", Select).value
        self._fill_devices(str(current))
        self.validate()

    def _fill_devices(self, current: str) -> None:
        names = ["auto", *(self.devices or [])]
        if current not in names:
            names.append(current)
        select = self.query_one("#f-device", Select)
        here = self.devices
        labels = [(f"{n} (not here)" if here is not None and n != "auto" and n not in here
                   else n, n) for n in names]
        select.set_options(labels)
        select.value = current

    # --- validation -------------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.validate()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.validate()

    def validate(self) -> bool:
        """Re-check every field and the whole config; updates `config`, `errors` and Start."""
        if self.preset is None:
            return False
        errors: list[str] = []
        values: dict[str, Any] = {}
        sweep: dict[str, list[Any]] = {}  # key -> the values of a list (tui/sweep_form.py)
        optim_name = str(self.query_one("#f-optim", Select).value)
        momentum = self.query_one("#f-momentum", Input)
        momentum.disabled = optim_name != "sgd"
        # fields that do not apply to the chosen optimiser are not shown at all
        self.query_one("#r-momentum").display = optim_name == "sgd"
        schedule = str(self.query_one("#f-schedule", Select).value)
        warms = schedule in SCHEDULE_ONLY["warmup_steps"]
        self.query_one("#f-warmup", Input).disabled = not warms
        self.query_one("#r-warmup").display = warms
        for key, label, wid in TEXT_FIELDS:
            widget = self.query_one(f"#{wid}", Input)
            if widget.disabled:
                widget.remove_class("-bad")
                continue
            try:
                values[key] = parse_listed(key, widget.value, parse_value, sweep)
                widget.remove_class("-bad")
            except ValueError as err:
                errors.append(f"{label}: {err}")
                widget.add_class("-bad")
        unit = str(self.query_one("#f-unit", Select).value)
        length = self.query_one("#f-length", Input)
        try:
            values[f"train.{unit}"] = parse_listed(f"train.{unit}", length.value,
                                                   parse_value, sweep)
            length.remove_class("-bad")
        except ValueError as err:
            errors.append(f"{unit}: {err}")
            length.add_class("-bad")
        device = str(self.query_one("#f-device", Select).value)
        if self.devices is not None and device != "auto" and device not in self.devices:
            errors.append(f"device: {device} is not available here "
                          f"(devices: {', '.join(self.devices)})")
        values["optim.name"] = optim_name
        values["train.loss"] = str(self.query_one("#f-loss", Select).value)
        values["train.device"] = device
        values["schedule.name"] = schedule
        values["train.precision"] = str(self.query_one("#f-precision", Select).value)
        self.overrides = self._overrides(values)
        self.sweep_values = sweep
        self.config = None
        if not errors:
            try:
                self.config = apply_overrides(self.preset, self.overrides)
            except ConfigError as err:
                errors.append(str(err).removeprefix("--set "))
        self.errors = errors
        self._show_errors()
        valid = self.config is not None
        self.query_one("#start-button", Button).disabled = not valid
        self.query_one("#save-button", Button).disabled = not valid
        self.post_message(self.Changed(valid))
        return valid

    def _overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        """The edits as ordered overrides: keys an optimiser switch makes invalid come first."""
        assert self.preset is not None
        preset_optim = self.preset["optim"]
        out: dict[str, Any] = {}
        name = values["optim.name"]
        if name != preset_optim["name"]:
            drop = SGD_ONLY if name != "sgd" else ADAM_ONLY
            for key in drop:
                default = OPTIM_FIELDS[key].default
                if preset_optim[key] != default:
                    out[f"optim.{key}"] = default
        if name != "sgd":
            values.pop("optim.momentum", None)
        schedule = values["schedule.name"]
        if schedule != _current(self.preset, "schedule.name"):  # keys it does not use go first
            for key, names in SCHEDULE_ONLY.items():
                default = SCHEDULE_FIELDS[key].default
                if schedule not in names and _current(self.preset, f"schedule.{key}") != default:
                    out[f"schedule.{key}"] = default
        if schedule not in SCHEDULE_ONLY["warmup_steps"]:
            values.pop("schedule.warmup_steps", None)
        for key, value in values.items():
            if _current(self.preset, key) != value:
                out[key] = value
        return out

    def _show_errors(self) -> None:
        box = self.query_one("#form-errors", Static)
        if self.errors:
            box.update("Start disabled: " + "; ".join(self.errors))
            box.add_class("-bad")
        else:
            edited = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in self.overrides.items())
            box.update(describe_sweep(self.sweep_values) or
                       (f"edited: {edited}" if edited else "preset values"))
            box.remove_class("-bad")
