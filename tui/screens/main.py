"""The main screen: presets and the hyperparameter form on the left; the loss plot, the fit view
and the parameter inspector on the right; the status line and the footer below.

Its keys come from tui/actions.py. The run it shows is followed by a RunController
(tui/controller.py), whose messages this screen turns into pictures: the data of each tick goes
into the panes at once (cheap), and the panes redraw when the controller says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer
from textual.worker import Worker, WorkerState

from tui.actions import MAIN_ACTIONS, bindings
from tui.controller import (
    TICK_S,
    RunCleared,
    RunController,
    RunEnded,
    RunFailedToStart,
    RunOpened,
    RunUpdated,
    SystemSampled,
)
from tui.engine_port import Engine
from tui.errors import user_message
from tui.help import HelpScreen
from tui.modals import ConfirmDialog, LrDialog, SavePresetDialog, offer_recovery
from tui.panes.fit_view import FitView
from tui.panes.inspector import Inspector
from tui.panes.loss_plot import LossPlot
from tui.panes.params_form import ParamsForm
from tui.panes.presets import PresetsPane
from tui.panes.ranks import RanksPane
from tui.panes.system import SystemStrip
from tui.run_state import RunState, Update
from tui.screens.runs import OpenRun, RunsScreen, StartJob
from tui.status import StatusLine, headline
from tui.status import duration as _duration

# the actions whose state the footer shows (enabled, disabled, hidden)
STATEFUL_ACTIONS = ("start", "pause", "resume", "stop", "set_lr", "save_preset")
# what failed, by worker group (the controller reports its start and attach failures itself)
WORKER_ERRORS = {"devices": "cannot list devices", "system": "cannot sample the machine",
                 "sweep": "cannot start the sweep"}
# stopping a run that has trained this long asks first
STOP_CONFIRM_S = 60.0


class MainScreen(Screen):
    BINDINGS = bindings(MAIN_ACTIONS)

    def __init__(self, engine: Engine, runs_dir: str | Path | None,
                 preset_dirs: list[str | Path], clock: Callable[[], float],
                 tick_s: float = TICK_S, background_delay_s: float = 0.3,
                 attach: str | Path | None = None) -> None:
        super().__init__()
        self.engine = engine
        self.runs_dir = runs_dir
        self.preset_dirs = preset_dirs
        self.clock = clock
        self.background_delay_s = background_delay_s
        self.attach = attach
        self.controller = RunController(self, engine, runs_dir, clock, tick_s)
        self.message = ""  # the last error or notice, shown in the status line
        self.status_line: StatusLine | None = None  # once mounted
        self._form_valid = False
        self._bindings_signature: tuple = ()
        self._dirty: set[str] = set()  # plots with new data not drawn yet
        self._pending_params: Any = None  # the newest ParamStats not shown yet
        self._load_run_config = False  # show the followed run's config in the form
        self._reverting_preset = False
        self._system_sample: Any = None

    @property
    def run_state(self) -> RunState:
        return self.controller.run_state

    # --- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield PresetsPane(id="presets")
                yield ParamsForm(id="form")
            with Vertical(id="right"):
                yield SystemStrip(id="system")
                with Horizontal(id="plots"):
                    yield LossPlot(id="loss-plot")
                    yield FitView(id="fit-view")
                yield Inspector(id="inspector")
                yield RanksPane(id="ranks")  # a distributed run's ranks (k)
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
        self.system_strip = self.query_one(SystemStrip)
        self.system_strip.show_sample(None)
        self.load_presets(select=None)
        # importing plotext (and asking for devices) competes for the GIL with the first
        # paint: start after it
        if self.background_delay_s > 0:
            self.set_timer(self.background_delay_s, self._background_start)
        else:
            self._background_start()
        self.controller.begin()
        self.query_one("#preset-list").focus()
        self.show_status()
        if self.attach is not None:  # once the screen is up: the run may open a dialog
            self.call_after_refresh(self.controller.attach, self.attach)

    def on_unmount(self) -> None:
        self.controller.close()

    def load_presets(self, select: str | None) -> None:
        from engine.presets import DEFAULT_PRESET

        try:
            presets = self.engine.presets(self.preset_dirs)
        except Exception as err:  # e.g. an unreadable --presets folder
            self.app.report_error(f"cannot list presets: {user_message(err)}")
            presets = []
        self.presets_pane.set_presets(presets, select=select or DEFAULT_PRESET)

    def _background_start(self) -> None:
        self._find_devices()
        self._warm_up_plotext()

    @work(thread=True, exit_on_error=False, group="devices")
    def _find_devices(self) -> list[str]:
        devices = self.engine.devices()
        self.app.call_from_thread(self.form.set_devices, devices)
        return devices

    @work(thread=True, exit_on_error=False, group="warm-up")
    def _warm_up_plotext(self) -> None:
        from tui.plotting import warm_up

        warm_up()

    # --- the status line ------------------------------------------------------------------
    def say(self, message: str) -> None:
        """Show `message` in the status line (errors: app.report_error, which comes here)."""
        self.message = message
        self.show_status()

    def show_status(self) -> None:
        if self.status_line is not None:
            self.status_line.show_run(self.run_state, self.clock(), self.message)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            what = WORKER_ERRORS.get(event.worker.group, "error")
            self.app.report_error(f"{what}: {user_message(event.worker.error)}")

    # --- messages from the controller -----------------------------------------------------
    def on_run_cleared(self, message: RunCleared) -> None:
        if message.detached_from:
            self.notify(f"detached from {message.detached_from}: it goes on training")
        self.message = message.note
        self._dirty.clear()
        self._pending_params = None
        self.loss_plot.model.clear()
        self.loss_plot.changed()
        self.fit_view.clear(message.task)
        self.inspector.clear()
        self._update_bindings()
        self.show_status()

    def on_run_opened(self, message: RunOpened) -> None:
        if message.how == "attach":
            self.message = message.note  # "opening …": done
        # a run opened or resumed: the form shows its own config, not the preset's
        self._load_run_config = message.how != "start"
        self._update_bindings()

    def on_system_sampled(self, message: SystemSampled) -> None:
        self._system_sample = message.sample
        self.system_strip.show_sample(message.sample, self.run_state.device)

    def on_run_updated(self, message: RunUpdated) -> None:
        up = message.update
        if up is not None and up.started is not None and self.run_state.active:
            self.message = ""  # "resuming…", "starting again…": it has started
        if up is not None and up.state_changed and self.message == "pausing…":
            self.message = ""  # paused (or ended): the badge says it
        if up is not None:
            self._take(up)
            self._update_bindings()
        if self.controller.notice:  # the trainer's word on the run just started: a toast
            notice, self.controller.notice = self.controller.notice, ""
            self.notify(notice, timeout=12)
        if message.redraw:
            self.redraw()

    def _take(self, up: Update) -> None:
        """Take in one tick's events: data only, drawn by `redraw`."""
        plot, fit = self.loss_plot, self.fit_view
        if up.truncate_at is not None:
            plot.model.truncate(up.truncate_at)
            self._dirty.add("loss-plot")
        if up.started is not None and up.started.start_step == 0:
            fit.clear(up.started.task)
        if up.started is not None and self._load_run_config and up.started.config:
            self._load_run_config = False
            try:
                self.form.load(up.started.config, source=f"run {up.started.run_id}")
                self.presets_pane.select(str(up.started.config.get("name", "")), quiet=True)
            except (KeyError, TypeError, ValueError) as err:  # an older run's partial config
                self.say(f"cannot show the run's config in the form: {user_message(err)}")
        model = plot.model
        if up.history is not None:
            self._take_history(up.history)
        for first, losses in up.losses:
            model.add_losses(first, losses)
        for last, lr in up.lrs:
            model.add_lr(last, lr)
        for epoch in up.epochs:
            if epoch.val_loss is not None:
                model.add_val(epoch.step, epoch.val_loss)
            acc = epoch.metrics.get("accuracy") if epoch.metrics else None
            if isinstance(acc, (int, float)):
                model.add_accuracy(epoch.step, float(acc))
            fit.add_epoch(epoch)
        for snapshot in up.all_params:
            norms = [p.grad_norm for p in snapshot.params if p.grad_norm is not None]
            if norms:
                model.add_grad_norm(snapshot.step, sum(g * g for g in norms) ** 0.5)
            self.inspector.record(snapshot)
        for change in up.lr_changes:
            if change.key == "optim.lr":
                model.mark_lr_change(change.step)
                self.form.follow_run_lr(change.new)
        if up.losses or up.epochs or up.all_params or up.lr_changes:
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

    def _take_history(self, history: Any) -> None:
        """A run's summarised past (opening a run of any length): the loss curve, lr and
        epochs at once, in as many points as the summary holds."""
        model, fit = self.loss_plot.model, self.fit_view
        model.load_history(history)
        accuracy = history.metrics.get("accuracy", ())
        for i, (epoch, train_loss) in enumerate(zip(history.epochs, history.train_loss,
                                                    strict=True)):
            acc = accuracy[i] if i < len(accuracy) and math.isfinite(accuracy[i]) else None
            fit.add_epoch(SimpleNamespace(epoch=epoch, train_loss=train_loss,
                                          metrics={} if acc is None else {"accuracy": acc}))
        self._dirty.update(("loss-plot", "fit-view"))

    def redraw(self) -> None:
        """Show what changed since the last redraw: plots, inspector, status line."""
        if "loss-plot" in self._dirty:
            self.loss_plot.changed()
        if "fit-view" in self._dirty:
            self.fit_view.changed()
        self._dirty.clear()
        if self._pending_params is not None:
            dead = self.controller.follower.dead
            run = self.run_state
            self.inspector.show_stats(self._pending_params, dead.dead_names(), dead.streak,
                                      None if run.active else run.step)
            self._pending_params = None
        self.system_strip.show_sample(self._system_sample, self.run_state.device)
        self.show_status()

    def on_run_ended(self, message: RunEnded) -> None:
        event = message.event
        if message.note:  # shown again after a job of it could not start: say why, only
            self.message = message.note
            self.show_status()
            return
        if event.type == "failed":
            self.app.report_error(f"run failed at step {event.step:,}: {event.reason}")
        elif event.type == "gone":
            self.app.report_error(f"run {self.run_state.run_id or ''}: {event.reason}")
        elif event.status == "diverged":
            reason = event.summary.get("reason") or f"diverged at step {event.step:,}"
            self.message = "run diverged: checking its checkpoints…"
            if message.quitting:
                self.notify(f"run diverged: {reason}", severity="error", timeout=10)
            else:
                self.offer_resume_diverged(reason)
        else:
            loss = event.summary.get("final_loss")
            numbers = ([f"final loss {loss:.4g}"] if isinstance(loss, float) else []) + \
                headline(self.run_state)
            tail = (": " + ", ".join(numbers)) if numbers else ""
            self.message = f"{event.status} at step {event.step:,}"
            self.notify(f"run {event.status} at step {event.step:,}{tail}", timeout=8)
        self.show_status()
        if message.quitting:
            self.app.exit()

    def on_run_failed_to_start(self, message: RunFailedToStart) -> None:
        self._update_bindings()
        self.app.report_error(message.text)

    def offer_resume_diverged(self, reason: str) -> None:
        """NaN guard: offer only what can work for the diverged run (the engine's
        recovery_options: a resume from a checkpoint that exists, naming the step it goes
        back to, or a fresh start or a replay), at a tenth of the last stable lr."""
        run_dir = self.controller.run_dir
        if not run_dir:
            return

        def chosen(job: Any, note: str) -> None:
            self.controller.start_job(job, note)

        lr = self.run_state.lr or 1e-3  # the rate it diverged at
        offer_recovery(self, run_dir, "The run diverged", f"{reason}\nHow should it go on?",
                       lr, chosen, cap=lr / 10)

    # --- messages from the panes ----------------------------------------------------------
    def on_presets_pane_selected(self, message: PresetsPane.Selected) -> None:
        if self._reverting_preset:
            self._reverting_preset = False
            return
        form = self.form
        previous = form.preset_name
        if form.overrides and previous and previous != message.info.name \
                and form.source == "preset":
            edits = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in form.overrides.items())

            def chosen(discard: bool | None) -> None:
                if discard:
                    form.load(message.info.config, name=message.info.name)
                elif self.presets_pane.select(previous):
                    self._reverting_preset = True

            self.app.push_screen(ConfirmDialog(
                f"Discard your edits to {previous}?", f"edited: {edits}",
                yes="Discard edits", no="Keep editing"), chosen)
            return
        form.load(message.info.config, name=message.info.name)

    def on_input_submitted(self, event: Any) -> None:
        """Enter in a form field starts the run (when the form is valid)."""
        if self.form in event.input.ancestors:
            event.stop()
            if self.check_action("start", ()):
                self.action_start()
            elif self.form.errors:
                self.say("cannot start: " + "; ".join(self.form.errors))

    def on_params_form_changed(self, message: ParamsForm.Changed) -> None:
        self._form_valid = message.valid
        self._update_bindings()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start-button":
            self.action_start()
        elif event.button.id == "save-button":
            self.action_save_preset()

    # --- actions --------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.run_state.state
        live = self.controller.live
        if action == "start":
            return False if self.run_state.active else (True if self._form_valid else None)
        if action == "pause":
            return live and state == "running"
        if action == "resume":
            return live and state == "paused"
        if action in ("stop", "set_lr"):
            return live and state in ("running", "paused")
        if action in ("save_preset", "lr_find", "gradcheck"):
            return True if self._form_valid else None
        if action == "leave_field":
            return self.maximized is not None or self._in_field()
        return True

    def _in_field(self) -> bool:
        focused = self.focused
        return focused is not None and self.form in focused.ancestors

    def _update_bindings(self) -> None:
        """Refresh the footer only when what it shows changed: each refresh recomposes it,
        a layout pass costing tens of milliseconds that a running loop would pay for."""
        signature = tuple(self.check_action(a, ()) for a in STATEFUL_ACTIONS)
        if signature != self._bindings_signature:
            self._bindings_signature = signature
            self.refresh_bindings()

    def action_start(self) -> None:
        if self.run_state.active:
            self.notify("a run is in progress: stop it first", severity="warning")
            return
        if self.form.config is None:
            reason = "; ".join(self.form.errors) or "the form is not valid"
            self.app.report_error(f"cannot start: {reason}")
            return
        if self.form.sweep_values:  # a list of values in a field: a sweep (tui/sweep_form.py)
            self.start_sweep()
            return
        self.controller.start(dict(self.form.config))

    def start_sweep(self) -> None:
        from tui.sweep_form import describe, grid, too_big

        sweep = dict(self.form.sweep_values)
        if too_big(sweep):
            self.app.report_error(f"cannot start the sweep: {too_big(sweep)}")
            return
        sets = [f"{k}={v!r}" for k, v in self.form.overrides.items() if k not in sweep]
        self.say(f"starting a {describe(sweep)}…")
        self._start_sweep(dict(self.form.config), grid(sweep), sets)

    @work(thread=True, exit_on_error=False, group="sweep")
    def _start_sweep(self, config: dict[str, Any], grid: list[Any], sets: list[str]) -> None:
        view = self.engine.start_sweep(config, grid, self.runs_dir, sets)
        self.app.call_from_thread(self._sweep_started, view)

    def _sweep_started(self, view: Any) -> None:
        from tui.screens.sweep import SweepScreen

        note = (f"sweep {view.id}: {len(view.runs)} runs, one after another, in the "
                "background (it goes on if you quit); R lists it with the runs")
        self.say(note)
        self.notify(note, timeout=8)
        self.app.push_screen(SweepScreen(view.path, view, note), self._run_chosen)

    def action_lr_find(self) -> None:
        from tui.screens.lr_find import LrFindScreen

        if self.form.config is None:
            self.app.report_error("cannot run the LR finder: the form is not valid")
            return

        def chosen(lr: float | None) -> None:
            if lr is not None:
                self.form.query_one("#f-lr").value = f"{lr:g}"
                self.say(f"lr {lr:g} from the LR finder: press s to train with it")

        self.app.push_screen(LrFindScreen(dict(self.form.config)), chosen)

    def action_gradcheck(self) -> None:
        from tui.screens.gradcheck import GradcheckScreen

        if self.form.config is None:
            self.app.report_error("cannot check gradients: the form is not valid")
            return
        self.app.push_screen(GradcheckScreen(dict(self.form.config)))

    def action_pause(self) -> None:
        if self.check_action("pause", ()):
            self.controller.pause()
            self.say("pausing…")

    def action_resume(self) -> None:
        if self.check_action("resume", ()):
            self.controller.resume()
            self.say("")

    def action_stop(self, confirmed: bool = False) -> None:
        if not self.check_action("stop", ()):
            return
        run = self.run_state
        if not confirmed and run.elapsed_s >= STOP_CONFIRM_S:
            def chosen(yes: bool | None) -> None:
                if yes:
                    self.action_stop(confirmed=True)

            done = f"step {run.step:,} of {run.total_steps:,}" if run.total_steps else \
                f"step {run.step:,}"
            self.app.push_screen(ConfirmDialog(
                f"Stop {run.run_id or 'the run'}?",
                f"It has trained for {_duration(run.elapsed_s)} ({done}). It stops after "
                "this step, with a checkpoint; it can be resumed later.",
                yes="Stop the run", no="Keep training", danger=True), chosen)
            return
        self.controller.stop()
        self._update_bindings()
        self.say("stopping after this step…")

    def stop_then_quit(self) -> None:
        self.controller.quit_when_ended = True
        self.action_stop(confirmed=True)
        self.say("stopping the run, then quitting…")

    def action_set_lr(self) -> None:
        if not self.check_action("set_lr", ()):
            return

        def chosen(value: float | None) -> None:
            if value is not None and self.controller.live:
                self.controller.set_lr(value)
                self.say(f"lr → {value:.4g} from the next step")

        self.app.push_screen(LrDialog(self.run_state.lr), chosen)

    def action_save_preset(self) -> None:
        form, pane = self.form, self.presets_pane
        if form.config is None or pane.current is None:
            self.app.report_error("cannot save: the form is not valid")
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

            config["name"] = name
            edits = ", ".join(f"{k}={v}" for k, v in form.overrides.items())
            config["description"] = f"{config['description']}\n(edited: {edits})".strip()
            try:
                path = save_preset(config, user_presets_dir() / f"{name}.toml")
            except Exception as err:
                self.app.report_error(f"cannot save the preset: {user_message(err)}")
                return
            self.load_presets(select=name)
            self.notify(f"saved {path}")

        self.app.push_screen(SavePresetDialog(suggestion, str(user_presets_dir()), taken),
                             chosen)

    def action_toggle_log(self) -> None:
        model = self.loss_plot.model
        model.log_y = not model.log_y
        model.version += 1
        self.loss_plot.changed()

    def action_toggle_window(self) -> None:
        model = self.loss_plot.model
        model.recent_only = not model.recent_only
        model.version += 1
        self.loss_plot.changed()

    def action_cycle_smoothing(self) -> None:
        self.loss_plot.model.cycle_smoothing()
        self.loss_plot.changed()

    def action_toggle_fit(self) -> None:
        self.toggle_class("-show-fit")

    def action_cycle_view(self) -> None:
        self.loss_plot.model.cycle_view()
        self.loss_plot.changed()

    def action_zoom(self) -> None:
        """Maximise the focused plot or the inspector (the run plot when neither has focus);
        again: restore."""
        if self.maximized is not None:
            self.minimize()
            return
        focused = self.focused
        if focused is not None and self.inspector in focused.ancestors:
            self.maximize(self.inspector, container=False)  # with its histogram and sparklines
            return
        plot = focused if isinstance(focused, (LossPlot, FitView)) else self.loss_plot
        if not plot.display:
            plot = self.fit_view if plot is self.loss_plot else self.loss_plot
        plot.focus()
        self.maximize(plot, container=False)

    def action_leave_field(self) -> None:
        if self.maximized is not None:
            self.minimize()
        elif self._in_field():
            self.query_one("#preset-list").focus()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def action_runs(self) -> None:
        self.app.push_screen(RunsScreen(self.runs_dir), self._run_chosen)

    def action_toggle_ranks(self) -> None:
        self.query_one(RanksPane).toggle()

    def _run_chosen(self, choice: OpenRun | StartJob | None) -> None:
        """What the runs screen was left with: a run to open, or a job to start. With a run
        in progress, first ask whether to detach from it (it goes on training)."""
        if choice is None:
            return
        if self.controller.live and not (isinstance(choice, OpenRun)
                                         and choice.path == self.controller.run_dir):
            def chosen(yes: bool | None) -> None:
                if yes:
                    self._open_choice(choice)

            what = "open another run" if isinstance(choice, OpenRun) else choice.note.rstrip("…")
            self.app.push_screen(ConfirmDialog(
                f"Detach from {self.run_state.run_id or 'the run in progress'}?",
                f"To {what}, the app stops following it; it goes on training in its own "
                "process (open it again from the runs screen).",
                yes="Detach", no="Cancel"), chosen)
            return
        self._open_choice(choice)

    def _open_choice(self, choice: OpenRun | StartJob) -> None:
        if isinstance(choice, OpenRun):
            if choice.path == self.controller.run_dir and self.controller.live:
                return  # already followed
            self.controller.attach(choice.path)
        else:
            self.controller.start_job(choice.job, choice.note)
