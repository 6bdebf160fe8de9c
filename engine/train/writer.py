"""The run-folder writer: the sink that appends every event to events.jsonl and derives
run.toml from them, so the loop never writes run.toml itself.

    Paused                 -> status paused
    Resumed                -> status running
    HparamChanged          -> [[changes]] gains the change
    Finished               -> status finished|stopped|diverged, [summary], [[changes]]
    Failed                 -> status failed, [summary] (with the reason)

Every event also goes to the run's summary (engine/summary.py), after its log line.

Other events only go to the log. Writes to the log are buffered: `flush` pushes them to
the file (the loop does so every few seconds and before each checkpoint).
"""

from __future__ import annotations

from typing import Any

from engine import events as ev


class RunWriter:
    """Writes one run's folder through its RunDir (or a NullRunDir on ranks other than 0)."""

    def __init__(self, run: Any) -> None:
        from engine.summary import SummaryWriter

        self.run = run
        self.changes: list[dict[str, Any]] = []  # live changes, in order (a checkpoint keeps them)
        # the multi-resolution summary beside the log (engine/summary.py); made before the
        # first append: it starts from the log's current size
        self.summary = SummaryWriter.for_run(run)

    def __call__(self, event: ev.Event) -> None:
        run = self.run
        run.append_event(event)
        self.summary(event)
        if isinstance(event, ev.HparamChanged):
            change = {"step": event.step, "key": event.key, "old": event.old, "new": event.new}
            self.changes.append(change)
            run.update(changes=self.changes)
        elif isinstance(event, ev.Paused):
            run.update("paused")
        elif isinstance(event, ev.Resumed):
            run.update("running")
        elif isinstance(event, ev.Finished):
            if self.changes:
                run.meta["changes"] = self.changes
            run.update(event.status, summary=event.summary)
        elif isinstance(event, ev.Failed):
            run.update("failed", summary={**event.summary, "reason": event.reason})

    def failed(self, event: ev.Failed) -> None:
        """The Failed event, written as far as the disk allows: the log line and run.toml
        are tried one by one (a full disk may still take the small run.toml)."""
        try:
            self.run.append_event(event)
            self.run.flush_events()
            self.summary(event)
        except OSError:
            drop = getattr(self.run, "drop_events", None)  # a NullRunDir writes nothing
            if drop is not None:
                drop()
        try:
            self.run.update("failed", summary={**event.summary, "reason": event.reason})
        except OSError:
            pass

    def flush(self) -> None:
        self.run.flush_events()

    def close(self) -> None:
        self.run.flush_events()
        self.run.close()
