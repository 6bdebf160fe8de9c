"""A sweep from the form: a list of values in a field ("0.001,0.003,0.01" or "[0.001, 0.003]")
makes Start start a sweep (one run per combination, engine.sweep) instead of one run.

The form (tui/panes/params_form.py) parses each text field through `parse_listed`: a single
value is returned as before; a list has each of its values checked like a single one, the
first stands in for the field (so the rest of the form validates as usual), and the list is
recorded as that key's sweep values. The main screen asks `grid` for what to sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

MAX_RUNS = 64  # a form is not the place for a bigger grid: `torchdeck sweep` is


def split_list(text: str) -> list[str] | None:
    """'0.001, 0.003' or '[0.001, 0.003]' -> ['0.001', '0.003']; None for a single value."""
    text = text.strip()
    bracketed = text.startswith("[") and text.endswith("]")
    if bracketed:
        text = text[1:-1]
    elif "," not in text:
        return None
    return [part.strip() for part in text.split(",")]


def parse_listed(key: str, text: str, parse: Callable[[str, str], Any],
                 sweep: dict[str, list[Any]]) -> Any:
    """The field's value (the first one of a list; a list's values go into `sweep[key]`), or
    ValueError naming the value that is wrong."""
    parts = split_list(text)
    if parts is None:
        return parse(key, text)
    if any(not p for p in parts):
        raise ValueError(f"an empty value in the list {text.strip()!r}")
    values = []
    for i, part in enumerate(parts, 1):
        try:
            value = parse(key, part)
        except ValueError as err:
            raise ValueError(f"value {i} of the list: {err}") from None
        if value in values:
            raise ValueError(f"{part} is in the list twice")
        values.append(value)
    if len(values) > 1:
        sweep[key] = values
    return values[0]


def runs_in(sweep: Mapping[str, list[Any]]) -> int:
    n = 1
    for values in sweep.values():
        n *= len(values)
    return n


def grid(sweep: Mapping[str, list[Any]]) -> list[tuple[str, list[Any]]]:
    """The sweep's grid for engine.sweep.plan_config_sweep, keys in form order."""
    return [(key, list(values)) for key, values in sweep.items()]


def too_big(sweep: Mapping[str, list[Any]]) -> str:
    """'' or why the form will not start this sweep."""
    n = runs_in(sweep)
    if n > MAX_RUNS:
        return f"{n} runs is more than {MAX_RUNS}: use `torchdeck sweep` for a grid this big"
    return ""


def describe(sweep: Mapping[str, list[Any]]) -> str:
    """'sweep: lr 0.001, 0.003, 0.01 → 3 runs' (the form's note under Start)."""
    if not sweep:
        return ""
    keys = "; ".join(f"{key.split('.')[-1]} {', '.join(_show(v) for v in values)}"
                     for key, values in sweep.items())
    return f"sweep: {keys} → {runs_in(sweep)} runs"


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
