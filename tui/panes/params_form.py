"""The hyperparameters form: typed inputs made from the selected preset, validated as you type.

The form's result is the preset's resolved config with the edits applied as overrides
(engine.presets.apply_overrides), so the engine's own validation has the last word and a
cross-field problem (e.g. momentum with adam) shows up here, before Start.
"""

from __future__ import annotations

import copy
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static

from engine.errors import ConfigError
from engine.presets import apply_overrides
from engine.schema import LOSSES, OPTIM_FIELDS, OPTIMIZERS, TRAIN_FIELDS, check_value

# (config key, label, input id)
TEXT_FIELDS = (
    ("optim.lr", "lr", "f-lr"),
    ("optim.momentum", "momentum", "f-momentum"),
    ("train.batch_size", "batch size", "f-batch"),
    ("train.seed", "seed", "f-seed"),
)
LABELS = {"optim.name": "optimiser", "train.loss": "loss", "train.device": "device",
          "length": "length", **{key: label for key, label, _ in TEXT_FIELDS}}
SGD_ONLY = ("momentum", "dampening", "nesterov")
ADAM_ONLY = ("betas", "eps")


def _field(key: str):
    section, name = key.split(".")
    return (OPTIM_FIELDS if section == "optim" else TRAIN_FIELDS)[name]


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


class ParamsForm(Vertical):
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
        optim_name = str(self.query_one("#f-optim", Select).value)
        momentum = self.query_one("#f-momentum", Input)
        momentum.disabled = optim_name != "sgd"
        # fields that do not apply to the chosen optimiser are not shown at all
        self.query_one("#r-momentum").display = optim_name == "sgd"
        for key, label, wid in TEXT_FIELDS:
            widget = self.query_one(f"#{wid}", Input)
            if widget.disabled:
                widget.remove_class("-bad")
                continue
            try:
                values[key] = parse_value(key, widget.value)
                widget.remove_class("-bad")
            except ValueError as err:
                errors.append(f"{label}: {err}")
                widget.add_class("-bad")
        unit = str(self.query_one("#f-unit", Select).value)
        length = self.query_one("#f-length", Input)
        try:
            values[f"train.{unit}"] = parse_value(f"train.{unit}", length.value)
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
        self.overrides = self._overrides(values)
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
        for key, value in values.items():
            section, field = key.split(".")
            if self.preset[section].get(field) != value:
                out[key] = value
        return out

    def _show_errors(self) -> None:
        box = self.query_one("#form-errors", Static)
        if self.errors:
            box.update("Start disabled: " + "; ".join(self.errors))
            box.add_class("-bad")
        else:
            edited = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in self.overrides.items())
            box.update(f"edited: {edited}" if edited else "preset values")
            box.remove_class("-bad")
