"""The machine in view: one line with the device and the figures of engine.system (CPU and
RSS of the training process, the machine's RAM, and on CUDA the GPU's utilisation,
temperature and memory), sampled in a thread by the run controller every ~2 s."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static


def system_text(sample: Any, device: str = "") -> Text:
    from engine.system import describe

    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append(" ⚙ ", style="bold")
    if device:
        text.append(device, style="bold")
        text.append(" · ", style="dim")
    text.append(describe(sample) if sample is not None else "sampling…", style="")
    return text


class SystemStrip(Static):
    """Fixed height: an update never needs a layout pass."""

    _shown = ""

    def show_sample(self, sample: Any, device: str = "") -> None:
        text = system_text(sample, device)
        if text.plain != self._shown:
            self._shown = text.plain
            self.update(text, layout=False)
