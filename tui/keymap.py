"""The user's keymap: `keymap.toml` beside the user's presets ($XDG_CONFIG_HOME/torchdeck, else
~/.config/torchdeck) maps binding ids (tui/actions.py, and the screens' BINDINGS) to keys:

    start = "ctrl+s"           # one key
    stop = ["x", "ctrl+x"]     # or several

The app applies it with `App.set_keymap`; a file that cannot be used is not applied at all and
the app says why in one message naming the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection
from pathlib import Path

FILE_NAME = "keymap.toml"


class KeymapError(Exception):
    pass


def keymap_path() -> Path:
    """Where the user's keymap is (like engine.presets.user_presets_dir, one folder up)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "torchdeck" / FILE_NAME


def read_keymap(path: Path, known: Collection[str]) -> dict[str, str]:
    """{binding id: 'key,key'} from `path`; {} if there is no such file. Raises KeymapError
    (its message names the file) for a file that cannot be read, is not TOML, names an id
    no binding has, or gives a key that is not a string."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise KeymapError(f"{path}: cannot read it: {err}; keymap not applied") from None
    except tomllib.TOMLDecodeError as err:
        raise KeymapError(f"{path}: not valid TOML: {err}; keymap not applied") from None
    keymap: dict[str, str] = {}
    problems: list[str] = []
    unknown = sorted(set(raw) - set(known))
    if unknown:
        problems.append(f"unknown binding id {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(sorted(known))})")
    for binding_id, value in raw.items():
        keys = [value] if isinstance(value, str) else value
        if not isinstance(keys, list) or not keys or not all(
                isinstance(k, str) and k.strip() and "," not in k for k in keys):
            problems.append(f"{binding_id}: expected a key such as \"ctrl+s\" or a list of "
                            f"keys, got {value!r}")
        elif binding_id in known:
            keymap[binding_id] = ",".join(k.strip() for k in keys)
    if problems:
        raise KeymapError(f"{path}: {'; '.join(problems)}; keymap not applied")
    return keymap
