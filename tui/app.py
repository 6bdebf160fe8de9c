"""The torchdeck app: presets, hyperparameters, live loss plot and parameter inspector (the main
screen, tui/screens/main.py); a runs screen to compare, open, resume and replay runs.

Runs train in their own process; the main screen's run controller (tui/controller.py) follows
them through their run folders. Here: the app itself, the user's keymap, the one place errors
are shown, quitting (with a run in progress: detach, or stop it and then quit), and the
factories. Torch is never imported on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from textual.app import App, SystemCommand
from textual.screen import Screen

from tui.actions import APP_ACTIONS, MAIN_ACTIONS, bindings, system_commands
from tui.controller import TICK_S, RunController
from tui.engine_port import Engine, RealEngine
from tui.keymap import KeymapError, keymap_path, read_keymap
from tui.modals import QuitDialog
from tui.screens.main import MainScreen


def binding_ids() -> set[str]:
    """Every binding id a keymap may name: the app's, and those of its screens and widgets."""
    from tui.help import HelpScreen
    from tui.modals import LrDialog
    from tui.panes.inspector import ParamTable
    from tui.screens.gradcheck import GradcheckScreen
    from tui.screens.lr_find import LrFindScreen
    from tui.screens.runs import RunsScreen
    from tui.screens.sweep import SweepScreen

    classes = (TorchdeckApp, MainScreen, RunsScreen, ParamTable, LrDialog, HelpScreen,
               SweepScreen, LrFindScreen, GradcheckScreen)
    return {b.id for cls in classes for b in cls.BINDINGS if getattr(b, "id", None)}


class TorchdeckApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "torchdeck"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide"), (160, "-huge")]
    BINDINGS = bindings(APP_ACTIONS)

    def __init__(
        self,
        runs_dir: str | Path | None = None,
        preset_dirs: Iterable[str | Path] = (),
        engine: Engine | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = TICK_S,
        background_delay_s: float = 0.3,
        attach: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.preset_dirs = list(preset_dirs)
        self.engine: Engine = engine or RealEngine()
        self.clock = clock
        self.main_screen = MainScreen(self.engine, runs_dir, self.preset_dirs, clock, tick_s,
                                      background_delay_s, attach)

    @property
    def controller(self) -> RunController:
        return self.main_screen.controller

    def get_default_screen(self) -> Screen:
        return self.main_screen

    def on_mount(self) -> None:
        self.load_keymap()

    def load_keymap(self, path: Path | None = None) -> None:
        """Apply the user's keymap file; a bad one is reported (naming it) and left out."""
        try:
            keymap = read_keymap(path or keymap_path(), binding_ids())
        except KeymapError as err:
            self.report_error(str(err))
            return
        if keymap:
            self.set_keymap(keymap)
            plot = getattr(self.main_screen, "loss_plot", None)
            if plot is not None:  # its title names the keys
                plot.changed()

    # --- the one place errors are shown ----------------------------------------------------
    def report_error(self, message: str) -> None:
        """Every error a user should see goes through here: a toast and the status line."""
        self.notify(message, severity="error", timeout=10)
        self.main_screen.say(message)

    # --- quitting ---------------------------------------------------------------------------
    async def action_quit(self) -> None:
        controller = self.controller
        if not controller.live:
            self.exit()
            return
        if controller.quit_when_ended:
            return  # stopping, then quitting already

        def chosen(choice: str | None) -> None:
            if choice == "detach":
                self.exit()
            elif choice == "stop":
                self.main_screen.stop_then_quit()

        self.push_screen(QuitDialog(), chosen)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # Textual's keys panel squeezes the panes (the help screen, ?, lists every key), and
        # its Maximize takes whatever has focus (the main screen's maximises a plot)
        replaced = ("Keys", "Maximize") if isinstance(screen, MainScreen) else ("Keys",)
        for command in super().get_system_commands(screen):
            if command.title not in replaced:
                yield command
        if isinstance(screen, MainScreen):
            yield from system_commands(screen, MAIN_ACTIONS)
        else:
            yield SystemCommand("Help: keys", "Every key of the app, on one screen",
                                self.show_help)

    def show_help(self) -> None:
        from tui.help import HelpScreen

        self.push_screen(HelpScreen())


def make_app(
    runs_dir: str | Path | None = None,
    preset_dirs: Iterable[str | Path] = (),
    engine: Engine | None = None,
    clock: Callable[[], float] | None = None,
    tick_s: float = TICK_S,
    background_delay_s: float = 0.3,
    attach: str | Path | None = None,
) -> TorchdeckApp:
    """The app; tests inject a fake `engine` and a fixed `clock` for deterministic pictures.

    `tick_s` is how often events are drained; `background_delay_s` how long after mounting the
    device list and plotext are loaded (after the first paint); `attach` a run folder to
    follow from the start."""
    return TorchdeckApp(runs_dir, preset_dirs, engine, clock or time.monotonic, tick_s,
                        background_delay_s, attach)


def run_app(runs_dir: str | Path | None = None, preset_dirs: Iterable[str | Path] = (),
            attach: str | Path | None = None) -> int:
    """Entry point for `torchdeck` (and `torchdeck attach RUN`, which passes `attach`)."""
    app = make_app(runs_dir=runs_dir, preset_dirs=preset_dirs, attach=attach)
    app.run()
    return app.return_code or 0
