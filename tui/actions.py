"""The one table of the app's commands: each row gives a key binding (with an id, for the user's
keymap) and, when it has a title, an entry of the command palette.

    MAIN_ACTIONS   the main screen's (tui/screens/main.py)
    APP_ACTIONS    the app's own, on every screen (tui/app.py)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from textual.app import SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode


@dataclass(frozen=True)
class Action:
    id: str  # the binding id: what keymap.toml names
    key: str
    action: str  # `action_<action>` of the node that owns the binding
    label: str  # in the footer
    title: str = ""  # in the command palette; "" keeps it out
    help: str = ""  # the palette's line under the title
    show: bool = True  # in the footer


MAIN_ACTIONS = (
    # ctrl+s and enter (in a field) start too: a form field takes the plain letters
    Action("start", "s,ctrl+s", "start", "Start", "Start run",
           "Train the selected preset with the form's values"),
    Action("pause", "p", "pause", "Pause", "Pause run", "Pause training (checkpoint written)"),
    Action("resume", "r", "resume", "Resume", "Resume run", "Continue a paused run"),
    Action("stop", "x", "stop", "Stop", "Stop run", "Stop gracefully: checkpoint, status stopped"),
    Action("set-lr", "l", "set_lr", "Set lr", "Change learning rate",
           "Set the lr of the running run (recorded in run.toml)"),
    Action("leave-field", "escape", "leave_field", "Leave field", "",
           "Leave the form field (or restore a maximised plot)"),
    Action("help", "question_mark", "help", "Help", "Help: keys",
           "Every key of the app, on one screen"),
    # shown in the plot's title and the command palette rather than the footer, which
    # has to fit 80 columns
    Action("save-preset", "w", "save_preset", "Save preset", "Save as preset",
           "Save the edited hyperparameters as a new preset", show=False),
    Action("plot-view", "c", "cycle_view", "Plot view", "Cycle plot view",
           "Plot: loss, accuracy, learning rate, gradient norm", show=False),
    Action("toggle-log", "g", "toggle_log", "Log scale", "Toggle log scale",
           "Plot: log / linear y axis", show=False),
    Action("toggle-window", "v", "toggle_window", "Window", "Toggle recent window",
           "Loss plot: recent steps / whole run", show=False),
    Action("smoothing", "m", "cycle_smoothing", "Smoothing", "Cycle smoothing",
           "Loss plot: smoothing 0, 0.6, 0.9, 0.99", show=False),
    Action("toggle-fit", "f", "toggle_fit", "Fit view", "Toggle fit view",
           "Narrow terminals: show the fit/metrics view", show=False),
    Action("zoom", "z", "zoom", "Zoom", "Maximise plot",
           "Maximise the focused plot (the run plot if none has focus); z or esc restores",
           show=False),
    Action("runs", "R", "runs", "Runs", "Runs",
           "Browse runs: compare curves and configs, open, resume, replay"),
    Action("toggle-ranks", "k", "toggle_ranks", "Ranks", "Toggle rank table",
           "Distributed runs: show / hide each rank's step, speed, memory, heartbeat",
           show=False),
    Action("lr-find", "L", "lr_find", "LR finder", "LR finder",
           "Range test on the form's config (a fresh copy): loss against lr, a suggested lr",
           show=False),
    Action("gradcheck", "G", "gradcheck", "Gradcheck", "Gradient check",
           "Autograd against finite differences on the form's model, per parameter",
           show=False),
)

# keys inside a form field (where letters are typed, not commands), for the help screen
FIELD_KEYS = (
    ("enter", "Start the run"),
    ("ctrl+s", "Start the run"),
    ("escape", "Leave the field"),
    ("tab, S-tab", "Next / previous field"),
)

# the palette has Textual's own "Quit" already
APP_ACTIONS = (Action("quit", "q", "quit", "Quit"),)


KEY_NAMES = {"slash": "/", "question_mark": "?", "escape": "esc", "space": "space",
             "enter": "enter"}


def key_label(action_id: str, keymap: dict[str, str] | None = None) -> str:
    """The first key bound to an action of MAIN_ACTIONS, with the user's keymap applied, as
    a user types it ("c", "?"): for titles that name their keys."""
    default = next((a.key for a in (*MAIN_ACTIONS, *APP_ACTIONS) if a.id == action_id), "")
    key = (keymap or {}).get(action_id, default).split(",")[0].strip()
    return KEY_NAMES.get(key, key)


def bindings(actions: Iterable[Action]) -> list[Binding]:
    return [Binding(a.key, a.action, a.label, show=a.show, id=a.id) for a in actions]


def system_commands(node: DOMNode, actions: Iterable[Action]) -> Iterable[SystemCommand]:
    """The palette's entries for `node`'s actions that its check_action allows now."""
    for a in actions:
        if a.title and node.check_action(a.action, ()):
            yield SystemCommand(a.title, a.help, getattr(node, f"action_{a.action}"))
