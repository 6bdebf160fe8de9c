"""The torchdeck app: presets, hyperparameters, live loss plot and parameter inspector; a runs
screen to compare, open, resume and replay runs.

Runs train in their own process (a worker in its own session: closing the terminal or
quitting the app with Detach leaves them training); the app follows a run through its run
directory, draining events on a timer (a few Hz) and redrawing only the panes whose data
changed. Attaching to a run started elsewhere, or opening a finished one, is the same
following. Torch is never imported on the event loop: workers ask for devices and runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer
from textual.worker import Worker, WorkerState

from engine.jobs import Job, ResumeJob
from tui.engine_port import Engine, RealEngine
from tui.errors import user_message
from tui.modals import LrDialog, QuitDialog, ResumeDialog, SavePresetDialog
from tui.pacing import RedrawPacer
from tui.panes.fit_view import FitView
from tui.panes.inspector import Inspector
from tui.panes.loss_plot import LossPlot
from tui.panes.params_form import ParamsForm
from tui.panes.presets import PresetsPane
from tui.run_state import Follower, RunState, Update
from tui.screens.runs import RunsScreen
from tui.status import StatusLine

TICK_S = 0.2
# share of one core the app's drawing may take while a run trains: training runs in another
# process now, so this is only what the app takes from the machine's cores (a CNN's intra-op
# threads use all of a small machine's), not from the training loop's GIL
REDRAW_BUDGET = 0.05
MAIN_SCREEN_ACTIONS = ("start", "pause", "resume", "stop", "set_lr", "save_preset",
                       "toggle_log", "toggle_window", "cycle_smoothing", "toggle_fit", "runs")
# (action, title, help) for the command palette; the keys are in BINDINGS
COMMANDS = (
    ("start", "Start run", "Train the selected preset with the form's values"),
    ("pause", "Pause run", "Pause training (checkpoint written)"),
    ("resume", "Resume run", "Continue a paused run"),
    ("stop", "Stop run", "Stop gracefully: checkpoint, status stopped"),
    ("set_lr", "Change learning rate", "Set the lr of the running run (recorded in run.toml)"),
    ("save_preset", "Save as preset", "Save the edited hyperparameters as a new preset"),
    ("toggle_log", "Toggle log scale", "Loss plot: log / linear y axis"),
    ("toggle_window", "Toggle recent window", "Loss plot: recent steps / whole run"),
    ("cycle_smoothing", "Cycle smoothing", "Loss plot: smoothing 0, 0.6, 0.9, 0.99"),
    ("toggle_fit", "Toggle fit view", "Narrow terminals: show the fit/metrics view"),
    ("runs", "Runs", "Browse runs: compare curves and configs, open, resume, replay"),
)


class TorchdeckApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "torchdeck"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    BINDINGS = [
        Binding("s", "start", "Start", id="start"),
        Binding("p", "pause", "Pause", id="pause"),
        Binding("r", "resume", "Resume", id="resume"),
        Binding("x", "stop", "Stop", id="stop"),
        Binding("l", "set_lr", "Set lr", id="set-lr"),
        # shown in the loss plot's title and the command palette rather than the footer,
        # which has to fit 80 columns
        Binding("w", "save_preset", "Save preset", id="save-preset", show=False),
        Binding("g", "toggle_log", "Log scale", id="toggle-log", show=False),
        Binding("v", "toggle_window", "Window", id="toggle-window", show=False),
        Binding("m", "cycle_smoothing", "Smoothing", id="smoothing", show=False),
        Binding("f", "toggle_fit", "Fit view", id="toggle-fit", show=False),
        Binding("R", "runs", "Runs", id="runs"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

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
        self.attach = attach
        self.background_delay_s = background_delay_s
        self.runs_dir = runs_dir
        self.preset_dirs = list(preset_dirs)
        self.engine: Engine = engine or RealEngine()
        self.clock = clock
        self.tick_s = tick_s
        self.follower = Follower(clock)
        self.handle: Any = None
        self.message = ""  # the last error or notice, shown in the status line
        self._quit_when_ended = False
        self._form_valid = False
        self._bindings_signature: tuple = ()
        self._dirty: set[str] = set()  # plots with new data not drawn yet
        self._pending_params: Any = None  # the newest ParamStats not shown yet
        self.pacer = RedrawPacer(min_interval=tick_s, budget=REDRAW_BUDGET)
        self.key_log: list[tuple[str, float]] = []  # (action, clock) for the latency bench
        self._resuming = False  # following a resume job whose new start is not in yet

    @property
    def run_state(self) -> RunState:
        return self.follower.run

    # --- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield PresetsPane(id="presets")
                yield ParamsForm(id="form")
            with Vertical(id="right"):
                with Horizontal(id="plots"):
                    yield LossPlot(id="loss-plot")
                    yield FitView(id="fit-view")
                yield Inspector(id="inspector")
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        # held, not queried, so that a timer firing while the app shuts down finds them
        self.status_line = self.query_one(StatusLine)
        self.loss_plot = self.query_one(LossPlot)
        self.fit_view = self.query_one(FitView)
        self.inspector = self.query_one(Inspector)
        self.form = self.query_one(ParamsForm)
        self.presets_pane = self.query_one(PresetsPane)
        self.load_presets(select=None)
        # importing torch (for the device list) and plotext competes for the GIL with the
        # first paint: start after it
        if self.background_delay_s > 0:
            self.set_timer(self.background_delay_s, self._background_start)
        else:
            self._background_start()
        self.set_interval(self.tick_s, self.tick)
        self.set_interval(2.0, self._poll_device_memory)
        self.query_one("#preset-list").focus()
        self._show_status()
        if self.attach is not None:
            self.attach_run(self.attach)

    def load_presets(self, select: str | None) -> None:
        from engine.presets import DEFAULT_PRESET

        try:
            presets = self.engine.presets(self.preset_dirs)
        except Exception as err:  # e.g. an unreadable --presets folder
            self.report_error(f"cannot list presets: {user_message(err)}")
            presets = []
        self.presets_pane.set_presets(presets, select=select or DEFAULT_PRESET)

    # --- workers and the one place errors are shown ----------------------------------------
    def _background_start(self) -> None:
        self._find_devices()
        self._warm_up_plotext()

    @work(thread=True, exit_on_error=False, group="devices")
    def _find_devices(self) -> list[str]:
        devices = self.engine.devices()
        self.call_from_thread(self.form.set_devices, devices)
        return devices

    @work(thread=True, exit_on_error=False, group="warm-up")
    def _warm_up_plotext(self) -> None:
        from tui.plotting import warm_up

        warm_up()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            what = {"devices": "cannot list devices", "start": "cannot start the run",
                    "memory": "cannot read device memory", "attach": "cannot open the run",
                    }.get(event.worker.group, "error")
            if event.worker.group in ("start", "attach"):
                self.run_state.state = "failed"
                self.run_state.reason = user_message(error)
                self._update_bindings()
            self.report_error(f"{what}: {user_message(error)}")

    def report_error(self, message: str) -> None:
        """Every error a user should see goes through here: a toast and the status line."""
        self.message = message
        self.notify(message, severity="error", timeout=10)
        self._show_status()

    # --- following the run ------------------------------------------------------------------
    def tick(self) -> None:
        """Drain what the run emitted since the last tick; redraw what changed when due."""
        force = False
        if self.handle is not None:
            events = self.handle.drain()
            if events:
                force = self.apply_update(self.follower.apply(events))
        if not self.run_state.active:
            self.redraw()
        elif force or self.pacer.due():
            self.redraw()
            self.pacer.drawn()

    def apply_update(self, up: Update) -> bool:
        """Take in one tick's events (cheap: data only); True if a redraw should not wait."""
        plot = self.loss_plot
        fit = self.fit_view
        if up.truncate_at is not None:
            plot.model.truncate(up.truncate_at)
            self._dirty.add("loss-plot")
        if up.started is not None and up.started.start_step == 0:
            fit.clear(up.started.task)
        for first, losses in up.losses:
            plot.model.add_losses(first, losses)
        for epoch in up.epochs:
            if epoch.val_loss is not None:
                plot.model.add_val(epoch.step, epoch.val_loss)
            fit.add_epoch(epoch)
        if up.losses or any(e.val_loss is not None for e in up.epochs):
            self._dirty.add("loss-plot")
        if up.params is not None:
            self._pending_params = up.params
        if up.fit is not None:
            fit.set_fit(up.fit)
        if up.fit is not None or up.epochs or up.started is not None:
            self._dirty.add("fit-view")
        for change in up.lr_changes:
            self.notify(f"{change.key} {change.old:.4g} → {change.new:.4g} at step {change.step:,}")
        ended_reason = getattr(up.ended, "summary", {}).get("reason") if up.ended else None
        for warning in up.warnings:
            if warning != ended_reason:  # a diverged run's reason: its dialog says it
                self.notify(warning, severity="warning", timeout=15)
        if up.started is not None and up.ended is None:
            self._resuming = False  # the resumed run has started: its own end counts
        if up.ended is not None:
            # the end decides what is dead (a short run may have one snapshot): show it again
            self._pending_params = self.follower.last_params
            if not self._resuming:  # not the earlier end of a run being resumed
                self._ended(up.ended)
        if up.state_changed:
            self._update_bindings()
        return up.state_changed or up.started is not None or bool(up.lr_changes)

    def redraw(self) -> None:
        """Show what changed since the last redraw: plots, inspector, status line."""
        if "loss-plot" in self._dirty:
            self.loss_plot.changed()
        if "fit-view" in self._dirty:
            self.fit_view.changed()
        self._dirty.clear()
        if self._pending_params is not None:
            dead = self.follower.dead
            self.inspector.show_stats(self._pending_params, dead.dead_names(), dead.streak)
            self._pending_params = None
        self._show_status()

    def _ended(self, event: Any) -> None:
        if event.type == "failed":
            self.report_error(f"run failed at step {event.step:,}: {event.reason}")
        elif event.type == "gone":
            self.report_error(f"run {self.run_state.run_id or ''}: {event.reason}")
        elif event.status == "diverged":
            reason = event.summary.get("reason") or f"diverged at step {event.step:,}"
            self.message = "run diverged"
            if self._quit_when_ended:
                self.notify(f"run diverged: {reason}", severity="error", timeout=10)
            else:
                self.offer_resume_diverged(reason)
        else:
            loss = event.summary.get("final_loss")
            tail = f", final loss {loss:.4g}" if isinstance(loss, float) else ""
            self.message = f"run {event.status} at step {event.step:,}{tail}"
            self.notify(self.message, timeout=6)
        if self._quit_when_ended:
            self.exit()

    def _show_status(self) -> None:
        self.status_line.show_run(self.run_state, self.clock(), self.message)

    def _poll_device_memory(self) -> None:
        run = self.run_state
        if run.active and run.device.startswith("cuda"):
            self.run_worker(self._read_memory, thread=True, exit_on_error=False,
                            group="memory", exclusive=True)

    def _read_memory(self) -> None:
        self.run_state.device_memory = self.engine.device_memory(self.run_state.device)

    # --- messages from the panes ------------------------------------------------------------
    def on_presets_pane_selected(self, message: PresetsPane.Selected) -> None:
        self.form.load(message.info.config)

    def on_params_form_changed(self, message: ParamsForm.Changed) -> None:
        self._form_valid = message.valid
        self._update_bindings()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start-button":
            self.action_start()
        elif event.button.id == "save-button":
            self.action_save_preset()

    # --- actions ----------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MAIN_SCREEN_ACTIONS and any(isinstance(s, RunsScreen)
                                                 for s in self.screen_stack):
            return False  # the runs screen has its own keys; these act on the main screen
        state = self.run_state.state
        live = self.handle is not None and self.run_state.active
        if action == "start":
            return False if self.run_state.active else (True if self._form_valid else None)
        if action == "pause":
            return live and state == "running"
        if action == "resume":
            return live and state == "paused"
        if action in ("stop", "set_lr"):
            return live and state in ("running", "paused")
        if action == "save_preset":
            return True if self._form_valid else None
        return True

    def _update_bindings(self) -> None:
        """Refresh the footer only when what it shows changed: each refresh recomposes it,
        a layout pass costing tens of milliseconds that a running loop would pay for."""
        actions = ("start", "pause", "resume", "stop", "set_lr", "save_preset")
        signature = tuple(self.check_action(a, ()) for a in actions)
        if signature != self._bindings_signature:
            self._bindings_signature = signature
            self.refresh_bindings()

    def _log_key(self, action: str) -> None:
        self.key_log.append((action, time.perf_counter()))

    def action_start(self) -> None:
        self._log_key("start")
        if self.run_state.active:
            self.notify("a run is in progress: stop it first", severity="warning")
            return
        form = self.form
        if form.config is None:
            reason = "; ".join(form.errors) or "the form is not valid"
            self.report_error(f"cannot start: {reason}")
            return
        self._begin(form.config["task"])
        self.run_worker(self._start(dict(form.config)), group="start", exit_on_error=False,
                        exclusive=True)

    def _begin(self, task: str = "", message: str = "") -> None:
        """Forget the run followed so far (a detached one goes on) and clear the panes."""
        self.message = message
        self.pacer.reset()
        self._dirty.clear()
        self._pending_params = None
        self.follower.reset("starting")
        self._resuming = False
        self.loss_plot.model.clear()
        self.loss_plot.changed()
        self.fit_view.clear(task)
        self.inspector.clear()
        if self.handle is not None:
            self.handle.close()  # stop following; a detached run goes on
        self.handle = None
        self._update_bindings()
        self._show_status()

    async def _start(self, config: dict[str, Any]) -> None:
        self._follow(await self.engine.start(config, self.runs_dir))

    def _follow(self, handle: Any) -> None:
        self.handle = handle
        self.run_state.run_dir = str(handle.run_dir or "")
        self._update_bindings()
        if self._quit_when_ended:  # quit was asked for while preparing
            handle.stop()
        self.tick()

    def start_job(self, job: Job, message: str = "") -> None:
        """Resume or replay a run (a job for engine.procs.worker) and follow it."""
        if self.handle is not None and self.run_state.active:
            self.notify(f"detached from {self.run_state.run_id}: it goes on training")
        self._begin(message=message)
        self._resuming = isinstance(job, ResumeJob)
        self.run_worker(self._spawn(job), group="start", exit_on_error=False, exclusive=True)

    async def _spawn(self, job: dict[str, Any]) -> None:
        self._follow(await self.engine.spawn(job))

    def attach_run(self, run_dir: str | Path) -> None:
        """Follow a run: its whole history so far, then live if its process still trains."""
        if self.handle is not None and self.run_state.active:
            self.notify(f"detached from {self.run_state.run_id}: it goes on training")
        self._begin(message=f"opening {Path(run_dir).name}…")
        self.run_worker(self._attach(run_dir), group="attach", exit_on_error=False,
                        exclusive=True)

    async def _attach(self, run_dir: str | Path) -> None:
        handle = self.engine.follow(run_dir)
        # the history may be long: parse it off the event loop
        await asyncio.to_thread(handle.wait_loaded)
        events = handle.drain()
        self.handle = handle
        self.run_state.run_dir = str(run_dir)
        self.message = ""
        self.apply_update(self.follower.apply(events))
        if not events:
            self.run_state.state = "idle"
            self.report_error(f"{run_dir}: no events yet (a damaged or empty run)")
        self._update_bindings()
        self.tick()
        self.redraw()

    def offer_resume_diverged(self, reason: str) -> None:
        """NaN guard: a diverged run may continue from its last good checkpoint with a lower
        learning rate (a resume job; source auto takes best.pt for a diverged run)."""
        # the handle's folder: the one in the events is where the run was made (it may have
        # been moved or copied since)
        run_dir = str(getattr(self.handle, "run_dir", "") or "") or self.run_state.run_dir
        if not run_dir:
            return
        lr = self.run_state.lr / 10 if self.run_state.lr else 1e-3

        def chosen(value: float | None) -> None:
            if value is None:
                return
            runs_dir = str(self.runs_dir) if self.runs_dir else None
            self.start_job(ResumeJob(run_dir, runs_dir, (f"optim.lr={value!r}",)),
                           f"resuming with lr {value:.4g}…")

        note = f"{reason}\nResume from the last good checkpoint with a lower learning rate?"
        self.push_screen(ResumeDialog("The run diverged", lr, note,
                                      ok_label="Resume with this lr"), chosen)

    def action_pause(self) -> None:
        self._log_key("pause")
        if self.check_action("pause", ()):
            self.handle.pause()
            self.message = "pausing…"
            self._show_status()

    def action_resume(self) -> None:
        self._log_key("resume")
        if self.check_action("resume", ()):
            self.handle.resume()
            self.message = ""
            self._show_status()

    def action_stop(self) -> None:
        self._log_key("stop")
        if self.check_action("stop", ()):
            self.handle.stop()
            self.run_state.state = "stopping"
            self.message = "stopping after this step…"
            self._update_bindings()
            self._show_status()

    def action_set_lr(self) -> None:
        self._log_key("set_lr")
        if not self.check_action("set_lr", ()):
            return

        def chosen(value: float | None) -> None:
            if value is not None and self.handle is not None and self.run_state.active:
                self.handle.set_lr(value)
                self.message = f"lr → {value:.4g} from the next step"
                self._show_status()

        self.push_screen(LrDialog(self.run_state.lr), chosen)

    def action_save_preset(self) -> None:
        form = self.form
        pane = self.presets_pane
        if form.config is None or pane.current is None:
            self.report_error("cannot save: the form is not valid")
            return
        from engine.presets import user_presets_dir

        config = dict(form.config)
        taken = {p.name for p in pane.presets}
        base = f"{config['name']}-edited"
        suggestion, n = base, 2
        while suggestion in taken:
            suggestion, n = f"{base}-{n}", n + 1

        def chosen(name: str | None) -> None:
            if name is None:
                return
            from engine.presets import save_preset

            folder = user_presets_dir()
            config["name"] = name
            edits = ", ".join(f"{k}={v}" for k, v in form.overrides.items())
            config["description"] = f"{config['description']}\n(edited: {edits})".strip()
            try:
                path = save_preset(config, folder / f"{name}.toml")
            except Exception as err:
                self.report_error(f"cannot save the preset: {user_message(err)}")
                return
            self.load_presets(select=name)
            self.notify(f"saved {path}")

        self.push_screen(SavePresetDialog(suggestion, str(user_presets_dir()), taken), chosen)

    def action_toggle_log(self) -> None:
        self._log_key("toggle_log")
        plot = self.loss_plot
        plot.model.log_y = not plot.model.log_y
        plot.model.version += 1
        plot.changed()

    def action_toggle_window(self) -> None:
        self._log_key("toggle_window")
        plot = self.loss_plot
        plot.model.recent_only = not plot.model.recent_only
        plot.model.version += 1
        plot.changed()

    def action_cycle_smoothing(self) -> None:
        self._log_key("cycle_smoothing")
        plot = self.loss_plot
        plot.model.cycle_smoothing()
        plot.changed()

    def action_toggle_fit(self) -> None:
        self.screen.toggle_class("-show-fit")

    async def action_quit(self) -> None:
        self._log_key("quit")
        if self.handle is not None and self.run_state.active:
            if self._quit_when_ended:
                return

            def chosen(choice: str | None) -> None:
                if choice == "detach":
                    self.exit()
                elif choice == "stop":
                    self._quit_when_ended = True
                    self.action_stop()
                    self.message = "stopping the run, then quitting…"
                    self._show_status()

            self.push_screen(QuitDialog(), chosen)
            return
        self.exit()

    def action_runs(self) -> None:
        if not isinstance(self.screen, RunsScreen):
            self.push_screen(RunsScreen(self.runs_dir))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action, title, help_text in COMMANDS:
            if self.check_action(action, ()):
                yield SystemCommand(title, help_text, getattr(self, f"action_{action}"))


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
