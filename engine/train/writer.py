"""The run-folder writer: the sink that appends every event to events.jsonl and derives
run.toml from them, so the loop never writes run.toml itself.

    Paused                 -> status paused
    Resumed                -> status running
    HparamChanged          -> [[changes]] gains the change
    Finished               -> status finished|stopped|diverged, [summary], [[changes]]
    Failed                 -> status failed, [summary] (with the reason)

Other events only go to the log. Writes to the log are buffered: `flush` pushes them to
the file (the loop does so every few seconds and before each checkpoint).
"""

from __future__ import annotations

from typing import Any

from engine import events as ev


class RunWriter:
    """Writes one run's folder through its RunDir (or a NullRunDir on ranks other than 0)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.changes: list[dict[str, Any]] = []  # live changes, in order (a checkpoint keeps them)

    def __call__(self, event: ev.Event) -> None:
        run = self.run
        run.append_event(event)
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

    def flush(self) -> None:
        self.run.flush_events()

    def close(self) -> None:
        self.run.flush_events()
        self.run.close()
