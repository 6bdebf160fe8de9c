"""Finding, loading and overriding presets. Torch-free, so the app can list presets at once."""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from engine.errors import ConfigError
from engine.schema import NOT_GIVEN, field_for, validate

DEFAULT_PRESET = "kink"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "presets"


def user_presets_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "torchdeck" / "presets"


@dataclass(frozen=True)
class PresetInfo:
    """One preset file as found on disk; `error` is set (and `config` None) when it is broken."""

    name: str
    path: Path
    title: str = ""
    task: str = ""
    description: str = ""
    builtin: bool = False
    error: str | None = None
    config: dict[str, Any] | None = None


def preset_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    return [BUILTIN_DIR, user_presets_dir(), *(Path(p) for p in extra)]


def read_preset_file(path: Path) -> dict[str, Any]:
    """Parse and validate one preset file; errors name the file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such preset file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    raw = parse_toml(data.removeprefix(b"\xef\xbb\xbf"), str(path))  # a BOM is fine
    return validate(raw, origin=str(path))


MAX_DEPTH = 16  # arrays and tables inside each other: no preset needs more


def parse_toml(data: bytes, origin: str) -> dict[str, Any]:
    """TOML bytes -> dict; ConfigError naming `origin` for anything that is not a preset's
    TOML (binary bytes, a syntax error, nesting deeper than MAX_DEPTH)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{origin}: not a text file (invalid UTF-8 at byte {err.start})"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{origin}: TOML syntax error: {err}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: nested more than {MAX_DEPTH} deep") from None
    check_depth(raw, origin)
    return raw


def check_depth(value: Any, origin: str, limit: int = MAX_DEPTH) -> None:
    """ConfigError if lists and tables are nested deeper than `limit` (no recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise ConfigError(f"{origin}: nested more than {limit} deep")
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)


def parse_value(text: str, origin: str) -> Any:
    """One value as on a command line (--set, --grid): TOML (`3e-4`, `[1, 2]`, `'a b'`), or the
    bare text as a string when it is not TOML; ConfigError naming `origin` when it nests
    deeper than MAX_DEPTH."""
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    except RecursionError:
        raise ConfigError(f"{origin}: nested more than {MAX_DEPTH} deep") from None
    check_depth(value, origin)
    return value


def discover_presets(extra_dirs: Iterable[str | Path] = ()) -> list[PresetInfo]:
    """Every preset in the built-in, user and extra folders; later folders win on name clashes.

    Broken files are returned with `error` set so a UI can show them, never raised.
    """
    found: dict[str, PresetInfo] = {}
    for folder in preset_dirs(extra_dirs):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            builtin = folder == BUILTIN_DIR
            try:
                config = read_preset_file(path)
            except ConfigError as err:
                found[path.stem] = PresetInfo(path.stem, path, builtin=builtin, error=str(err))
                continue
            found[config["name"]] = PresetInfo(
                name=config["name"],
                path=path,
                title=config["title"],
                task=config["task"],
                description=config["description"],
                builtin=builtin,
                config=config,
            )
    return sorted(found.values(), key=lambda p: (not p.builtin, p.name))


def find_preset(name_or_path: str, extra_dirs: Iterable[str | Path] = ()) -> Path:
    """A preset name (searched in the preset folders) or a path to a .toml file."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"{name_or_path}: no such preset file")
        return path
    for folder in reversed(preset_dirs(extra_dirs)):
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    for info in discover_presets(extra_dirs):
        if info.name == name_or_path:
            return info.path
    names = ", ".join(p.name for p in discover_presets(extra_dirs) if p.error is None)
    raise ConfigError(f"unknown preset {name_or_path!r} (known: {names})")


def parse_set(option: str) -> tuple[str, Any]:
    """'optim.lr=0.01' -> ('optim.lr', 0.01). Values are TOML; bare words become strings."""
    key, sep, text = option.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {option}: expected key=value, e.g. --set optim.lr=0.01")
    return key, parse_value(text, f"--set {key}")


def apply_overrides(
    config: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any]
) -> dict[str, Any]:
    """Apply --set style overrides to a resolved config and re-validate it.

    Errors name the --set option rather than the preset file.
    """
    items = (
        list(overrides.items())
        if isinstance(overrides, Mapping)
        else [parse_set(o) for o in overrides]
    )
    result = copy.deepcopy(dict(config))
    for key, value in items:
        label = f"--set {key}={_show(value)}"
        fld = field_for(result, key)
        if fld is None:
            raise ConfigError(f"{label}: unknown key {key!r} ({_known_keys(result, key)})")
        parts = key.split(".")
        if len(parts) == 1:
            result[key] = value
        else:
            section = result.setdefault(parts[0], {})
            section[parts[1]] = value
            if key == "train.epochs":
                section["steps"] = 0
            elif key == "train.steps":
                section["epochs"] = 0
        try:
            result = validate(_strip_defaults(result), origin="")
        except ConfigError as err:
            raise ConfigError(f"{label}: {err}") from None
    return result


def _strip_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """Drop the 'not given' placeholders (epochs=0, steps=0, ...) of a resolved config."""
    out = copy.deepcopy(config)
    for section, placeholders in NOT_GIVEN.items():
        table = out.get(section)
        if not isinstance(table, dict):
            continue
        for key, value in placeholders.items():
            if key in table and table[key] == value:
                table.pop(key)
    return out


def _known_keys(config: Mapping[str, Any], key: str) -> str:
    from engine.schema import SECTIONS, TOP_FIELDS, section_fields

    section = key.split(".")[0]
    if section in SECTIONS and section != "report":
        return "known keys in " + section + ": " + ", ".join(section_fields(config, section))
    return "known sections: " + ", ".join([*TOP_FIELDS, *SECTIONS])


def _show(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def resolve_config(
    source: str | Path | Mapping[str, Any],
    overrides: Sequence[str] | Mapping[str, Any] = (),
    extra_dirs: Iterable[str | Path] = (),
) -> dict[str, Any]:
    """A preset name, a preset file or a raw preset dict, plus overrides -> resolved config."""
    if isinstance(source, Mapping):
        check_depth(source, "config")
        config = validate(_strip_defaults(dict(source)))
    else:
        config = read_preset_file(find_preset(str(source), extra_dirs))
    if overrides:
        config = apply_overrides(config, overrides)
    return config


def config_to_toml(config: Mapping[str, Any]) -> str:
    """A resolved config as preset TOML (keys left at 'not given' are left out)."""
    return tomli_w.dumps(_strip_defaults(dict(config)))


def save_preset(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write a config as a preset file (validated first)."""
    path = Path(path)
    validate(_strip_defaults(dict(config)), origin=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(config_to_toml(config))
    os.replace(tmp, path)
    return path
