"""Issue 10: generated and mutated presets (keys, types, values, bytes, nesting, sizes) through
loading and validation: nothing but the project's own error (TorchdeckError) ever comes out;
a few dozen of them also through `torchdeck train FILE --set train.steps=3`."""

from __future__ import annotations

import copy
import datetime
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from engine.errors import TorchdeckError
from engine.presets import BUILTIN_DIR, read_preset_file, resolve_config
from engine.schema import validate

PRESETS = {p.stem: tomllib.loads(p.read_text()) for p in sorted(BUILTIN_DIR.glob("*.toml"))}
SMALL = ["kink", "neuron-linear", "neuron-mlp", "neuron-2in", "blobs-line", "dense-relu"]
KEYS = sorted(
    {k for raw in PRESETS.values() for k in raw}
    | {f"{s}.{k}" for raw in PRESETS.values() for s, t in raw.items() if isinstance(t, dict)
       for k in t}
    | {"model.layers.0.type", "model.init.0.dist", "data.source", "zzz", "train.zzz", "a.b.c"}
)  # fmt: skip


def leaves(small: bool) -> st.SearchStrategy[Any]:
    big = 16 if small else 2**70
    return st.one_of(
        st.integers(-big, big),
        st.floats(allow_nan=not small, allow_infinity=not small),
        st.booleans(),
        st.text(max_size=20),
        st.text(max_size=400) if not small else st.just(""),
        st.sampled_from(["Linear", "ReLU", "normal", "fixed", "formula", "teacher", "digits",
                         "random", "sgd", "adam", "mse", "cross_entropy", "cpu", "x", ":",
                         "arange(0, 4)", "x * 2", "__import__('os')", "p['nope']"]),
        st.just(datetime.date(2020, 1, 1)),
    )  # fmt: skip


def values(small: bool) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves(small),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3 if small else 6),
            st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3),
        ),
        max_leaves=8 if small else 30,
    )


def set_path(raw: dict, dotted: str, value: Any) -> None:
    node: Any = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            if not node:
                return
            node = node[int(part) % len(node)] if part.isdigit() else node[0]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            return
    if isinstance(node, dict):
        node[parts[-1]] = value
    elif isinstance(node, list) and node:
        node[0] = value


def drop_path(raw: dict, dotted: str) -> None:
    node: Any = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


@st.composite
def presets(draw: st.DrawFn, small: bool = False) -> bytes:
    """TOML bytes: a built-in preset with a few edits, then maybe its bytes edited too."""
    raw = copy.deepcopy(PRESETS[draw(st.sampled_from(SMALL if small else sorted(PRESETS)))])
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(KEYS))
        action = draw(st.sampled_from(["set", "set", "drop", "nest", "wide"]))
        if action == "set":
            set_path(raw, key, draw(values(small)))
        elif action == "drop":
            drop_path(raw, key)
        elif action == "nest" and not small:
            depth = draw(st.sampled_from([5, 17, 40, 300]))
            value: Any = 1
            for i in range(depth):
                value = [value] if i % 2 else {"a": value}
            set_path(raw, key, value)
        elif action == "wide" and not small:
            set_path(raw, key, [draw(leaves(small))] * draw(st.sampled_from([0, 1, 1000])))
    try:
        text = tomli_w.dumps(raw).encode()
    except (TypeError, ValueError, RecursionError):
        text = b"name = 1\n"
    edit = draw(st.sampled_from(["none", "none", "bom", "bytes", "cut", "binary"]))
    if edit == "bom":
        text = b"\xef\xbb\xbf" + text
    elif edit == "bytes" and not small:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]
    elif edit == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif edit == "binary" and not small:
        text = draw(st.binary(max_size=64))
    return text


def only_our_errors(fn, *args: Any) -> None:
    try:
        fn(*args)
    except TorchdeckError:
        pass


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@seed(20261123)
@settings(
    max_examples=1200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(text=presets())
def test_loading_and_validation_raise_only_our_errors(scratch, text):
    path = scratch / "fuzz.toml"
    path.write_bytes(text)
    only_our_errors(read_preset_file, path)
    try:
        raw = tomllib.loads(text.decode("utf-8", errors="replace"))
    except (tomllib.TOMLDecodeError, RecursionError):
        return
    only_our_errors(resolve_config, raw)
    only_our_errors(resolve_config, raw, ["train.steps=3"])
    if isinstance(raw, dict):
        only_our_errors(validate, raw, "fuzz.toml")


@seed(20261124)
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=presets(small=True))
def test_train_on_mutated_presets_exits_cleanly(scratch, cli, text):
    path = scratch / "fuzz-train.toml"
    path.write_bytes(text)
    runs = scratch / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    try:
        code, out, err = cli("train", str(path), "--set", "train.steps=3", "--runs-dir", str(runs))
    finally:
        left = sorted(runs.iterdir()) if runs.is_dir() else []
        shutil.rmtree(runs, ignore_errors=True)
    assert "Traceback" not in out + err
    assert code in (0, 2, 3), (code, err)  # 3: the mutated preset diverged in 3 steps
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
        assert not left
