"""Small dialogs: change the learning rate, name a new preset, what to do with a run on quit."""

from __future__ import annotations

import math
import re

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_lr(text: str) -> float | str:
    """The learning rate in `text`, or why it is not one."""
    try:
        value = float(text)
    except ValueError:
        return f"expected a number > 0, got {text!r}"
    if not math.isfinite(value) or value <= 0:
        return f"expected a number > 0, got {text}"
    return value


class _Dialog(ModalScreen):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog-cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)


class LrDialog(_Dialog):
    """Asks for a new learning rate; dismisses with the float, or None. The field has focus
    from the first frame, so the first key typed after `l` lands in it."""

    AUTO_FOCUS = "#lr-input"

    def __init__(self, current: float) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"New learning rate (now {self.current:.6g})")
            yield Input(value=f"{self.current:.6g}", id="lr-input", compact=True)
            yield Static("", id="lr-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Set", id="lr-ok", variant="primary", compact=True)
                yield Button("Cancel", id="lr-cancel", compact=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "lr-ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        value = parse_lr(self.query_one("#lr-input", Input).value.strip())
        if isinstance(value, str):
            self.query_one("#lr-error", Static).update(value)
        else:
            self.dismiss(value)


class SavePresetDialog(_Dialog):
    """Asks for a file name for the edited preset; dismisses with the name, or None."""

    def __init__(self, suggestion: str, folder: str, taken: set[str]) -> None:
        super().__init__()
        self.suggestion = suggestion
        self.folder = folder
        self.taken = taken

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Save as a new preset in {self.folder}")
            yield Input(value=self.suggestion, id="name-input", compact=True)
            yield Static("", id="name-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="name-ok", variant="primary", compact=True)
                yield Button("Cancel", id="name-cancel", compact=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "name-ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        name = self.query_one("#name-input", Input).value.strip()
        error = self.query_one("#name-error", Static)
        if not NAME_RE.match(name):
            error.update("letters, digits, '-', '_' and '.' only")
        elif name in self.taken:
            error.update(f"a preset named {name!r} exists already")
        else:
            self.dismiss(name)


class QuitDialog(_Dialog):
    """A run is in progress: dismisses with 'detach' (the default: quit, the run goes on in its
    own process), 'stop' (stop it gracefully, then quit) or None (cancel)."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("A run is in progress. What should happen to it?")
            yield Static("Detach: it keeps training in its own process; "
                         "`torchdeck attach` follows it again.", classes="dialog-note")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Detach", id="quit-detach", variant="primary", compact=True)
                yield Button("Stop and quit", id="quit-stop", variant="error", compact=True)
                yield Button("Cancel", id="quit-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#quit-detach", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss({"quit-detach": "detach", "quit-stop": "stop"}.get(event.button.id or ""))


class ResumeDialog(_Dialog):
    """Resume a run (from its last good checkpoint) with a learning rate; dismisses with the
    float, or None. Used for a diverged run (NaN guard) and from the runs screen."""

    def __init__(self, title: str, lr: float, note: str = "", ok_label: str = "Resume") -> None:
        super().__init__()
        self.title_text = title
        self.lr = lr
        self.note = note
        self.ok_label = ok_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="resume-dialog"):
            yield Label(self.title_text, id="resume-title")
            if self.note:
                yield Static(self.note, id="resume-note", classes="dialog-note")
            yield Label("Learning rate from the resume step on:")
            yield Input(value=f"{self.lr:.6g}", id="resume-lr", compact=True)
            yield Static("", id="resume-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.ok_label, id="resume-ok", variant="primary", compact=True)
                yield Button("Not now", id="resume-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#resume-ok", Button).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "resume-ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        value = parse_lr(self.query_one("#resume-lr", Input).value.strip())
        if isinstance(value, str):
            self.query_one("#resume-error", Static).update(value)
        else:
            self.dismiss(value)


class ConfirmDialog(_Dialog):
    """A yes/no question; dismisses with True (the first button), or False (the other, or
    escape). Enter takes the focused button: the safe one unless `default_yes`."""

    def __init__(self, question: str, note: str = "", yes: str = "Yes", no: str = "Cancel",
                 default_yes: bool = False, danger: bool = False) -> None:
        super().__init__()
        self.question = question
        self.note = note
        self.yes = yes
        self.no = no
        self.default_yes = default_yes
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="confirm-dialog"):
            yield Label(self.question, id="confirm-question")
            if self.note:
                yield Static(self.note, classes="dialog-note", id="confirm-note")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, id="confirm-yes", compact=True,
                             variant="error" if self.danger else "primary")
                yield Button(self.no, id="confirm-no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-yes" if self.default_yes else "#confirm-no", Button).focus()

    def action_cancel(self) -> None:
        self.dismiss(False)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")
