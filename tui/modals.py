"""Small dialogs: change the learning rate, name a new preset, what to do with a run on quit, how
to go on with a stopped, killed, failed or diverged run."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from tui.engine_port import Recovery
from tui.errors import user_message

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


def recovery_label(option: Recovery) -> str:
    """A button's words for one way to go on: where it starts, and how far a resume goes
    back ("back to step 11,760 of 29,311")."""
    if option.kind == "resume":
        source = f"{option.source}.pt" if option.source else "its checkpoint"
        if option.reached > option.step:
            return f"Resume from {source}: back to step {option.step:,} of {option.reached:,}"
        return f"Resume from {source} at step {option.step:,}"
    if option.kind == "fresh":
        return "Start again from step 0, in this run's folder"
    return "Replay as a new run (same config and lr changes)"


class RecoveryDialog(_Dialog):
    """How to go on with a run that stopped, was killed, failed or diverged: one button per
    way that can work (engine.resume.recovery_options: a resume only where a checkpoint
    exists, naming the step it goes back to; a fresh start or a replay), the best first and
    focused, and the learning rate to go on with (for a diverged run a tenth of the last
    stable one; the field follows the focused button until it is edited). Dismisses with
    (Recovery, lr) or None."""

    BINDINGS = [
        Binding("down", "app.focus_next", "Next", show=False, id="recovery-next"),
        Binding("up", "app.focus_previous", "Previous", show=False, id="recovery-previous"),
    ]

    def __init__(self, title: str, note: str, options: list[Recovery], lr: float,
                 cap: float | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.note = note
        self.options = list(options)
        self.lr = lr  # the run's own, for options that propose none
        # at most this (a tenth of the rate it diverged at: a retry at the proposed rate that
        # diverged again gets a tenth of that)
        self.cap = cap
        self._edited = False
        self._proposed = ""  # the value last put in the field here (not typed)

    def _lr_of(self, option: Recovery) -> float:
        if option.lr is None:
            return self.lr
        return min(option.lr, self.cap) if self.cap else option.lr

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="recovery-dialog"):
            yield Label(self.title_text, id="recovery-title")
            if self.note:
                yield Static(self.note, id="recovery-note", classes="dialog-note")
            with Horizontal(id="recovery-lr-row"):
                yield Label("learning rate ", id="recovery-lr-label")
                first = self._lr_of(self.options[0]) if self.options else self.lr
                self._proposed = f"{first:.6g}"
                yield Input(value=self._proposed, id="recovery-lr", compact=True)
            yield Static("", id="recovery-error", classes="dialog-error")
            with Vertical(id="recovery-choices"):
                for i, option in enumerate(self.options):
                    yield Button(recovery_label(option), id=f"recovery-{i}", compact=True,
                                 variant="primary" if i == 0 else "default")
                yield Button("Not now", id="recovery-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#recovery-0" if self.options else "#recovery-cancel", Button).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.value != self._proposed:
            self._edited = True

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        option = self._option_of(event.widget)
        if option is not None and not self._edited:  # the proposed lr of the focused way
            self._proposed = f"{self._lr_of(option):.6g}"
            self.query_one("#recovery-lr", Input).value = self._proposed

    def _option_of(self, widget: object) -> Recovery | None:
        wid = getattr(widget, "id", "") or ""
        if wid.startswith("recovery-") and wid[9:].isdigit():
            return self.options[int(wid[9:])]
        return None

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.options:
            self._submit(self.options[0])

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        option = self._option_of(event.button)
        if option is None:
            self.dismiss(None)
        else:
            self._submit(option)

    def _submit(self, option: Recovery) -> None:
        value = parse_lr(self.query_one("#recovery-lr", Input).value.strip())
        if isinstance(value, str):
            self.query_one("#recovery-error", Static).update(value)
        else:
            self.dismiss((option, value))


def recovery_note(option: Recovery, lr: float | None) -> str:
    """What the status line says while the chosen way starts."""
    at = f" with lr {lr:.4g}" if lr is not None else ""
    if option.kind == "resume":
        return f"resuming from step {option.step:,}{at}…"
    if option.kind == "fresh":
        return f"starting again from step 0{at}…"
    return f"replaying as a new run{at}…"


def offer_recovery(screen: Any, run_dir: str | Path, title: str, note: str, lr: float,
                   chosen: Callable[[Any, str], None], cap: float | None = None) -> None:
    """Ask the engine what can work for the run (in a thread: it reads the checkpoints),
    then the user (RecoveryDialog); `chosen(job, note)` gets the job to start and a line
    saying what it does. `lr` is the run's own (kept as it is where a way proposes none);
    `cap`: the most a proposed lr may be (a diverged run: a tenth of the rate it diverged
    at)."""
    app = screen.app
    name = Path(run_dir).name

    def ask() -> None:
        try:
            options = app.engine.recovery_options(run_dir)
        except Exception as err:
            app.call_from_thread(app.report_error,
                                 f"cannot check {name}'s checkpoints: {user_message(err)}")
            return
        app.call_from_thread(show, options)

    def show(options: list[Recovery]) -> None:
        if not options:
            app.report_error(f"{name}: nothing to resume (it is live, finished or damaged)")
            return

        def done(choice: tuple[Recovery, float] | None) -> None:
            if choice is None:
                return
            option, value = choice
            keep = option.lr is None and value == lr  # the run's own lr: no override
            chosen(option.job_at(None if keep else value),
                   recovery_note(option, None if keep else value))

        app.push_screen(RecoveryDialog(title, note, options, lr, cap), done)

    screen.run_worker(ask, thread=True, exit_on_error=False, group="recovery", exclusive=True)
