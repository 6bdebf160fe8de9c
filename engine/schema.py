"""The preset schema: typed msgspec Structs for every key, their types, defaults and limits.

The Structs below are the single description of a preset file. From them come:

- `validate(raw, origin)`: the fully resolved config (plain dicts and lists, every default
  filled in) or a ConfigError naming the file, the key and what was expected;
- `Field` tables (`TRAIN_FIELDS`, `section_fields`, ...) for the form and `--set` messages;
- `json_schema()`: a JSON Schema for editors. `torchdeck schema > preset.schema.json`, then
  start a preset with `#:schema ./preset.schema.json` (taplo / Even Better TOML).

Torch-free on purpose: the app validates every preset at start-up and must not wait for
torch. The name lists (losses, layers, ...) therefore live here as Literal types and
tests/test_schema.py checks them against the torch-side modules.
"""

import ast
import fnmatch
import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec
import msgspec.structs
from msgspec import UNSET, Meta, Struct, UnsetType, field

from engine.errors import ConfigError

# --- names (checked against engine.losses / optim / data / models by tests/test_schema.py) --

Loss = Literal["mse", "sse", "half_mse", "half_sse", "l1", "cross_entropy"]
OptimName = Literal["sgd", "adam", "adamw"]
Dtype = Literal["float32", "float64"]
Task = Literal["regression", "classification"]
BuiltinModel = Literal["legendre-p3"]
ScheduleName = Literal["constant", "step", "exponential", "cosine", "onecycle", "plateau"]
Precision = Literal["fp32", "bf16", "fp16"]
EarlyStopMetric = Literal["val_loss", "accuracy"]

LOSSES: tuple[str, ...] = get_args(Loss)
OPTIMIZERS: tuple[str, ...] = get_args(OptimName)
DTYPES: tuple[str, ...] = get_args(Dtype)
BUILTIN_MODELS: tuple[str, ...] = get_args(BuiltinModel)
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
PRECISIONS: tuple[str, ...] = get_args(Precision)
EARLY_STOP_METRICS: tuple[str, ...] = get_args(EarlyStopMetric)

EXPR_FUNCTIONS = (
    "arange linspace where sin cos tan exp log sqrt abs relu tanh sigmoid clamp "
    "zeros_like ones_like max min sum mean prod norm"
).split()
EXPR_CONSTANTS = ("pi", "e")

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
_DEVICE_PATTERN = "^(auto|cpu|cuda|mps|cuda:[0-9]+)$"

# --- value checks that are more than a type (messages as the users know them) -------------


def _number_list(length: int | None = None) -> Callable[[Any, Mapping[str, Any]], None]:
    def check(value: Any, context: Mapping[str, Any]) -> None:
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not ok or (length is not None and len(value) != length):
            what = f"a list of {length} numbers" if length else "a list of numbers"
            raise ValueError(f"expected {what}, got {value!r}")

    return check


def _check_transform(rows: Any, context: Mapping[str, Any]) -> None:
    n = context.get("n_features", 2)
    n = n if isinstance(n, int) and not isinstance(n, bool) else 2
    if rows and len(rows) != n:
        raise ValueError(f"expected a {n}x{n} matrix, got {rows!r}")
    for row in rows:
        ok = isinstance(row, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in row
        )
        if not ok or len(row) != n:
            raise ValueError(f"expected a list of {n} numbers, got {row!r}")


def _check_shape(shape: Any, context: Mapping[str, Any]) -> None:
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    if not shape or not ok:
        raise ValueError(f"expected a list of positive integers, got {shape!r}")


def _check_non_empty(value: Any, context: Mapping[str, Any]) -> None:
    if not value:
        raise ValueError("expected a non-empty list")


# --- type shorthands ----------------------------------------------------------------------

Pos = Annotated[int, Meta(ge=1)]
NonNeg = Annotated[int, Meta(ge=0)]
PosFloat = Annotated[float, Meta(gt=0.0)]
NonNegFloat = Annotated[float, Meta(ge=0.0)]
Expr = Annotated[str, Meta(extra={"kind": "expr"})]


def _list(check: Callable[[Any, Mapping[str, Any]], None], about: str = "", **rule: Any) -> Meta:
    """A list whose items `check` vets after every type check (as always: same messages, same
    order); `rule` says the same to the JSON Schema."""
    return Meta(description=about or None, extra={"check": check}, extra_json_schema=rule)


_NUMBER = {"type": "number"}
Numbers = Annotated[list, _list(_number_list(), items=_NUMBER)]


class _Table(Struct, forbid_unknown_fields=True, kw_only=True):
    pass


# --- layers (tag `type`: the torch.nn class) -------------------------------------------------


class _Layer(_Table, tag_field="type", tag=True):
    pass


class Linear(_Layer):
    in_features: Pos
    out_features: Pos
    bias: bool = True


class Conv2d(_Layer):
    in_channels: Pos
    out_channels: Pos
    kernel_size: Pos
    stride: Pos = 1
    padding: NonNeg = 0
    bias: bool = True


class ReLU(_Layer):
    pass


class LeakyReLU(_Layer):
    negative_slope: float = 0.01


class Tanh(_Layer):
    pass


class Sigmoid(_Layer):
    pass


class GELU(_Layer):
    pass


class Softmax(_Layer):
    dim: int = -1


class Dropout(_Layer):
    p: NonNegFloat = 0.5


class Flatten(_Layer):
    start_dim: int = 1
    end_dim: int = -1


class AdaptiveAvgPool2d(_Layer):
    output_size: Pos


class MaxPool2d(_Layer):
    kernel_size: Pos
    stride: Annotated[int, Meta(ge=0, description="0: the kernel size")] = 0


class AvgPool2d(_Layer):
    kernel_size: Pos


class BatchNorm1d(_Layer):
    num_features: Pos


class BatchNorm2d(_Layer):
    num_features: Pos


class Identity(_Layer):
    pass


Layer = (
    Linear | Conv2d | ReLU | LeakyReLU | Tanh | Sigmoid | GELU | Softmax | Dropout | Flatten
    | AdaptiveAvgPool2d | MaxPool2d | AvgPool2d | BatchNorm1d | BatchNorm2d | Identity
)  # fmt: skip

# --- init rules (tag `dist`: torch.nn.init.<dist>_) ------------------------------------------


class _Init(_Table, tag_field="dist"):
    params: Annotated[
        str,
        Meta(description="glob on parameter names, e.g. '*.weight'",
             extra_json_schema={"minLength": 1}),
    ]  # fmt: skip


class NormalInit(_Init, tag="normal"):
    mean: float = 0.0
    std: NonNegFloat = 1.0


class UniformInit(_Init, tag="uniform"):
    a: float = 0.0
    b: float = 1.0


class ConstantInit(_Init, tag="constant"):
    value: float


class ZerosInit(_Init, tag="zeros"):
    pass


class OnesInit(_Init, tag="ones"):
    pass


class XavierUniformInit(_Init, tag="xavier_uniform"):
    gain: float = 1.0


class XavierNormalInit(_Init, tag="xavier_normal"):
    gain: float = 1.0


class KaimingUniformInit(_Init, tag="kaiming_uniform"):
    a: float = 0.0


class KaimingNormalInit(_Init, tag="kaiming_normal"):
    a: float = 0.0


class OrthogonalInit(_Init, tag="orthogonal"):
    gain: float = 1.0


Init = (
    NormalInit | UniformInit | ConstantInit | ZerosInit | OnesInit | XavierUniformInit
    | XavierNormalInit | KaimingUniformInit | KaimingNormalInit | OrthogonalInit
)  # fmt: skip

# --- data sources (tag `source`) -------------------------------------------------------------


class _Data(_Table, tag_field="source"):
    pass


class Formula(_Data, tag="formula"):
    """1-D regression data from two expressions."""

    x: Annotated[Expr, Meta(description="1-D inputs, e.g. 'arange(-20, 20, 2)'")]
    y: Annotated[Expr, Meta(description="targets as a function of x")]


class Blobs(_Data, tag="blobs"):
    """scikit-learn's make_blobs, optionally multiplied by a matrix; two columns are x and y."""

    n_samples: Annotated[int, Meta(ge=2)] = 1000
    centers: Pos = 1
    n_features: Annotated[int, Meta(ge=2)] = 2
    random_state: int = 0
    transform: Annotated[
        list,
        _list(
            _check_transform,
            "n_features x n_features matrix",
            items={"type": "array", "items": _NUMBER},
        ),
    ] = []
    x_col: NonNeg = 0
    y_col: NonNeg = 1


class Digits(_Data, tag="digits"):
    """scikit-learn's bundled 8x8 digits."""

    image: bool = False
    test_fraction: PosFloat = 0.2
    split_seed: int = 0
    scale: PosFloat = 16.0


class Teacher(_Data, tag="teacher"):
    """A random linear teacher; a fresh batch every step."""

    in_features: Pos
    out_features: Pos
    steps_per_epoch: Pos = 100


class Cifar10(_Data, tag="cifar10"):
    """torchvision's CIFAR-10 from a local folder."""

    root: str = "data"
    mean: Numbers = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])
    std: Numbers = field(default_factory=lambda: [0.2470, 0.2435, 0.2616])
    verify: Annotated[bool, Meta(description="check the md5 sums of the files")] = False
    limit: Annotated[int, Meta(ge=0, description="use only the first N images (0: all)")] = 0


class Fixed(_Data, tag="fixed"):
    """Inputs and targets written out in the preset."""

    x: Annotated[list, _list(_check_non_empty, minItems=1)]
    y: Annotated[list, _list(_check_non_empty, minItems=1)]


class Random(_Data, tag="random"):
    """Gaussian inputs with random labels or targets (benchmarks)."""

    shape: Annotated[
        list,
        _list(_check_shape, "shape of one input, e.g. [3, 32, 32]", minItems=1,
              items={"type": "integer", "exclusiveMinimum": 0}),
    ]  # fmt: skip
    n_samples: Pos = 1024
    classes: Annotated[int, Meta(ge=2, description="classification: labels 0..classes-1")] = 10
    targets: Annotated[int, Meta(ge=1, description="regression: outputs per sample")] = 1


def _check_resident(value: Any, context: Mapping[str, Any]) -> None:
    if value != "auto" and not isinstance(value, bool):
        raise ValueError(f'expected "auto", true or false, got {value!r}')


_AUGMENT = re.compile(r"^(hflip|vflip)(:(0(\.\d+)?|1(\.0*)?))?$|^random_crop:[1-9]\d*$")


def _check_augment(value: Any, context: Mapping[str, Any]) -> None:
    for item in value:
        if not isinstance(item, str) or not _AUGMENT.match(item):
            raise ValueError(
                f"expected hflip[:p], vflip[:p] or random_crop:PAD (e.g. 'random_crop:4'), "
                f"got {item!r}"
            )


def _check_channels(value: Any, context: Mapping[str, Any]) -> None:
    if value not in (1, 3):
        raise ValueError(f"expected 1 (grey) or 3 (RGB), got {value!r}")


def _check_names(value: Any, context: Mapping[str, Any]) -> None:
    if not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of column names, got {value!r}")


# keys every source of the user's own data has: which path, and the DataLoader's settings
Resident = Annotated[
    Literal["auto"] | bool,
    Meta(
        description='"auto": on the device when it fits (else streamed), true, or false',
        extra={"kind": "resident", "check": _check_resident},
    ),
]
Workers = Annotated[int, Meta(ge=0, description="DataLoader worker processes (streaming)")]
Prefetch = Annotated[int, Meta(ge=1, description="batches each worker loads ahead")]
Augment = Annotated[
    list,
    _list(
        _check_augment,
        "per-sample, on the device: hflip[:p], vflip[:p], random_crop:PAD",
        items={"type": "string", "pattern": _AUGMENT.pattern},
    ),
]
Fraction = Annotated[float, Meta(ge=0.0, lt=1.0)]
Names = Annotated[list, _list(_check_names, "column names", items={"type": "string"})]
TorchvisionName = Literal[
    "MNIST", "FashionMNIST", "KMNIST", "QMNIST", "CIFAR10", "CIFAR100", "SVHN", "STL10", "USPS"
]
TORCHVISION_DATASETS: tuple[str, ...] = get_args(TorchvisionName)


class Torchvision(_Data, tag="torchvision"):
    """One of torchvision's dataset classes, from a local folder (downloads nothing)."""

    dataset: TorchvisionName
    root: str = "data"
    mean: Numbers = []  # per channel, after / 255; []: none
    std: Numbers = []
    verify: Annotated[bool, Meta(description="check the md5 sums of the files")] = False
    limit: Annotated[int, Meta(ge=0, description="use only the first N images (0: all)")] = 0
    augment: Augment = []
    resident: Resident = "auto"
    num_workers: Workers = 2
    prefetch: Prefetch = 2


class ImageFolderData(_Data, tag="image_folder"):
    """torchvision's ImageFolder: root/<class>/*.png, or root/{train,test}/<class>/*.png."""

    root: str
    image_size: Annotated[int, Meta(ge=1, description="images are resized to this square")] = 32
    channels: Annotated[int, Meta(ge=1, description="1 (grey) or 3 (RGB)",
                                  extra={"check": _check_channels})] = 3  # fmt: skip
    test_fraction: Annotated[Fraction, Meta(description="held out where there is no test/")] = 0.0
    split_seed: int = 0
    mean: Numbers = []
    std: Numbers = []
    augment: Augment = []
    resident: Resident = "auto"
    num_workers: Workers = 2
    prefetch: Prefetch = 2


class Csv(_Data, tag="csv"):
    """A CSV table with a header row: numeric features, a target column."""

    path: str
    target: Annotated[str, Meta(description="the target column's name")]
    features: Annotated[Names, Meta(description="feature columns ([]: all but the target)")] = []
    delimiter: Annotated[str, Meta(extra_json_schema={"minLength": 1, "maxLength": 1})] = ","
    test_fraction: Fraction = 0.2
    split_seed: int = 0
    resident: Resident = "auto"
    num_workers: Workers = 0
    prefetch: Prefetch = 2


class Tensors(_Data, tag="tensors"):
    """A .npz or .pt file with arrays x, y and optionally x_test, y_test."""

    path: str
    augment: Augment = []
    resident: Resident = "auto"
    num_workers: Workers = 0
    prefetch: Prefetch = 2


class DataFactory(_Data, tag="factory"):
    """A module:function returning Dataset(s) or tensors."""

    factory: Annotated[
        str, Meta(description="module:function", extra_json_schema={"pattern": "^[^:]+:[^:]+$"})
    ]
    kwargs: dict[str, Any] = {}
    augment: Augment = []
    resident: Resident = "auto"
    num_workers: Workers = 2
    prefetch: Prefetch = 2


Data = (
    Formula | Blobs | Digits | Teacher | Cifar10 | Fixed | Random
    | Torchvision | ImageFolderData | Csv | Tensors | DataFactory
)  # fmt: skip

# --- sections ----------------------------------------------------------------------------------


class Model(_Table, kw_only=True):
    """Exactly one of layers, builtin or factory ("module:function")."""

    layers: Annotated[list[Layer], Meta(extra={"kind": "layers"})] = []
    builtin: BuiltinModel = ""  # type: ignore[assignment]  # "": not given
    factory: Annotated[
        str, Meta(description="module:function", extra_json_schema={"pattern": "^[^:]+:[^:]+$"})
    ] = ""
    kwargs: dict[str, Any] = {}
    init: Annotated[list[Init], Meta(extra={"kind": "inits"})] = []


_SGD_ONLY = Meta(description="sgd only", extra={"only": ("sgd",)})

_ADAM_ONLY = Meta(description="adam and adamw only", extra={"only": ("adam", "adamw")})


class Optim(_Table, kw_only=True):
    name: OptimName
    lr: PosFloat
    momentum: Annotated[NonNegFloat, _SGD_ONLY] = 0.0
    dampening: Annotated[NonNegFloat, _SGD_ONLY] = 0.0
    nesterov: Annotated[bool, _SGD_ONLY] = False
    weight_decay: NonNegFloat = 0.0
    betas: Annotated[
        list, _list(_number_list(2), items=_NUMBER, minItems=2, maxItems=2), _ADAM_ONLY
    ] = field(default_factory=lambda: [0.9, 0.999])
    eps: Annotated[PosFloat, _ADAM_ONLY] = 1e-8


class Train(_Table, kw_only=True):
    """Give epochs or steps."""

    epochs: Pos = 0  # 0: not given
    steps: Pos = 0
    batch_size: Pos
    loss: Loss
    seed: NonNeg = 0
    device: Annotated[
        str, Meta(description=DEVICE_HELP, extra_json_schema={"pattern": _DEVICE_PATTERN})
    ] = "auto"
    shuffle: bool = True
    dtype: Dtype = "float32"
    threads: Annotated[int, Meta(ge=0, description="torch threads on CPU (0: torch's default)")] = 0
    log_every_s: PosFloat = 0.25
    stats_every_s: PosFloat = 1.0
    checkpoint_every_s: NonNegFloat = 30.0
    clip_grad_norm: Annotated[
        NonNegFloat, Meta(description="clip the gradient norm to this (0: off)")
    ] = 0.0
    accumulate: Annotated[
        int, Meta(ge=1, description="batches per optimizer step (gradient accumulation)")
    ] = 1
    precision: Annotated[
        Precision, Meta(description="autocast dtype: fp32 (off), bf16, fp16 (GradScaler)")
    ] = "fp32"
    compile: Annotated[bool, Meta(description="torch.compile the model")] = False
    channels_last: Annotated[
        bool, Meta(description="channels-last memory format (4-D inputs)")
    ] = False


def _check_fraction(value: Any, context: Mapping[str, Any]) -> None:
    if not 0 < value < 1:
        raise ValueError(f"expected a number between 0 and 1 (both excluded), got {value!r}")


Fraction = Annotated[float, Meta(gt=0.0, lt=1.0, extra={"check": _check_fraction})]


def _only(*names: str) -> Meta:
    return Meta(description=f"{', '.join(names)} only", extra={"only": names})


class Schedule(_Table, kw_only=True):
    """The learning-rate schedule (torch.optim.lr_scheduler), stepped per optimizer step
    (plateau: per epoch, on the test loss, or the epoch's training loss without [eval])."""

    name: ScheduleName = "constant"
    warmup_steps: Annotated[
        int,
        Meta(ge=0, description="linear warm-up over this many optimizer steps"),
        _only("constant", "step", "exponential", "cosine"),
    ] = 0
    min_lr: Annotated[NonNegFloat, _only("cosine", "plateau")] = 0.0
    step_size: Annotated[
        int, Meta(ge=0, description="optimizer steps between decays (0: an epoch's)"),
        _only("step"),
    ] = 0
    gamma: Annotated[PosFloat, _only("step", "exponential")] = 0.1
    max_lr: Annotated[
        NonNegFloat, Meta(description="0: optim.lr"), _only("onecycle")
    ] = 0.0
    pct_start: Annotated[Fraction, _only("onecycle")] = 0.3
    patience: Annotated[
        int, Meta(ge=0, description="epochs without improvement"), _only("plateau")
    ] = 10
    factor: Annotated[Fraction, _only("plateau")] = 0.1


class EarlyStop(_Table, kw_only=True):
    """Stop when the metric has not improved by min_delta for `patience` evaluations; the
    best weights (best.pt) are restored at the end."""

    metric: EarlyStopMetric = "val_loss"
    patience: Annotated[int, Meta(ge=1, description="evaluations without improvement")] = 5
    min_delta: NonNegFloat = 0.0


class Eval(_Table, kw_only=True):
    """Test-split loss (and accuracy) every N epochs."""

    every_epochs: Pos = 1
    batch_size: Pos = 1000


Report = dict[str, Expr]


class PresetHead(_Table, kw_only=True):
    name: str
    title: str = ""
    description: str = ""
    task: Task


class Preset(PresetHead, kw_only=True):
    """A torchdeck preset file."""

    data: Data
    model: Model
    optim: Optim
    train: Train
    eval: Eval | UnsetType = UNSET
    schedule: Schedule | UnsetType = UNSET
    early_stop: EarlyStop | UnsetType = UNSET
    report: Annotated[
        Report | UnsetType,
        Meta(description="values printed at the end, from parameters p[...] and data d[...]"),
    ] = UNSET


# Keys of which a section takes exactly one, and the "not given" values of the others: a
# resolved config holds those, a preset file leaves them out.
ONE_OF: dict[str, tuple[str, ...]] = {
    "model": ("layers", "builtin", "factory"),
    "train": ("epochs", "steps"),
}
NOT_GIVEN: dict[str, dict[str, Any]] = {
    "train": {"epochs": 0, "steps": 0},
    "model": {"builtin": "", "factory": "", "layers": []},
}

_SECTION_TYPES: dict[str, Any] = {
    "data": Data,
    "model": Model,
    "optim": Optim,
    "train": Train,
    "eval": Eval,
    "report": Report,
    "schedule": Schedule,
    "early_stop": EarlyStop,
}

# --- Field: the schema of one key, as the form and the messages use it ---------------------

NO_DEFAULT = object()


class Field(Struct, frozen=True):
    kind: str  # int | float | bool | str | choice | list | table | layers | inits | expr
    default: Any = NO_DEFAULT
    choices: tuple[str, ...] = ()
    min: float | None = None
    min_exclusive: bool = False
    help: str = ""
    check: Callable[[Any, Mapping[str, Any]], None] | None = None

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        noun = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "expr": "an expression string",
            "list": "a list",
            "table": "a table",
        }.get(self.kind, self.kind)
        if self.min is not None:
            op = ">" if self.min_exclusive else ">="
            bound = int(self.min) if float(self.min).is_integer() else self.min
            noun += f" {op} {bound}"
        return noun


def _field_from(info: msgspec.structs.FieldInfo) -> Field:
    """A Field from a Struct field's annotation: its type, Meta limits and Meta extras."""
    t, metas = info.type, []
    if get_origin(t) is Annotated:
        t, *metas = get_args(t)
    low, exclusive, help_, extra = None, False, "", {}
    for meta in metas:
        if meta.ge is not None:
            low = meta.ge
        if meta.gt is not None:
            low, exclusive = meta.gt, True
        help_ = meta.description or help_
        extra.update(meta.extra or {})
    origin, choices = get_origin(t), ()
    if origin is Literal:
        kind, choices = "choice", get_args(t)
    else:
        names = {int: "int", float: "float", bool: "bool", str: "str", list: "list", dict: "table"}
        kind = names.get(origin or t, "str")
    if info.required:
        default = NO_DEFAULT
    elif info.default_factory is not msgspec.NODEFAULT:
        default = info.default_factory()
    else:
        default = info.default
    kind = extra.get("kind", kind)
    return Field(kind, default, choices, low, exclusive, help_, extra.get("check"))


def _table(cls: Any) -> dict[str, Field]:
    return {f.name: _field_from(f) for f in msgspec.structs.fields(cls)}


def _tag(cls: Any) -> str:
    return cls.__struct_config__.tag


TOP_FIELDS: dict[str, Field] = _table(PresetHead)
MODEL_FIELDS: dict[str, Field] = _table(Model)
OPTIM_FIELDS: dict[str, Field] = _table(Optim)
TRAIN_FIELDS: dict[str, Field] = _table(Train)
EVAL_FIELDS: dict[str, Field] = _table(Eval)
SCHEDULE_FIELDS: dict[str, Field] = _table(Schedule)
EARLY_STOP_FIELDS: dict[str, Field] = _table(EarlyStop)
LAYERS: dict[str, dict[str, Field]] = {_tag(c): _table(c) for c in get_args(Layer)}
INIT_DISTS: dict[str, dict[str, Field]] = {
    _tag(c): {k: f for k, f in _table(c).items() if k != "params"} for c in get_args(Init)
}
DATA_SOURCES: dict[str, dict[str, Field]] = {_tag(c): _table(c) for c in get_args(Data)}
OPTIM_ONLY: dict[str, tuple[str, ...]] = {  # keys only some optimisers use (Meta extra "only")
    f.name: meta.extra["only"]
    for f in msgspec.structs.fields(Optim)
    for meta in get_args(f.type)[1:]
    if isinstance(meta, Meta) and "only" in (meta.extra or {})
}
SCHEDULE_ONLY: dict[str, tuple[str, ...]] = {  # keys only some schedules use
    f.name: meta.extra["only"]
    for f in msgspec.structs.fields(Schedule)
    for meta in get_args(f.type)[1:]
    if isinstance(meta, Meta) and "only" in (meta.extra or {})
}
SECTIONS: tuple[str, ...] = tuple(_SECTION_TYPES)
REQUIRED_SECTIONS: tuple[str, ...] = tuple(
    f.name for f in msgspec.structs.fields(Preset) if f.name in SECTIONS and f.required
)


def section_fields(config: Mapping[str, Any], section: str) -> dict[str, Field]:
    """The fields a section may hold, given the rest of the config (data depends on source)."""
    if section == "data":
        source = config.get("data", {}).get("source")
        fields = {"source": Field("choice", choices=tuple(DATA_SOURCES))}
        fields.update(DATA_SOURCES.get(source, {}) if isinstance(source, str) else {})
        return fields
    return {
        "model": MODEL_FIELDS,
        "optim": OPTIM_FIELDS,
        "train": TRAIN_FIELDS,
        "eval": EVAL_FIELDS,
        "schedule": SCHEDULE_FIELDS,
        "early_stop": EARLY_STOP_FIELDS,
    }.get(section, {})


def field_for(config: Mapping[str, Any], dotted: str) -> Field | None:
    """The schema field for a dotted key such as 'optim.lr', or None if there is none."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return TOP_FIELDS.get(parts[0])
    if len(parts) == 2 and parts[0] == "report":
        return Field("expr")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        return None
    return section_fields(config, parts[0]).get(parts[1])


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def check_value(fld: Field, value: Any, context: Mapping[str, Any] | None = None) -> Any:
    """Return the value converted to the field's type, or raise ValueError(description).

    `context` is the section the value sits in (some list checks depend on a sibling key).
    """
    expected = f"expected {fld.describe()}, got {_type_name(value)} {value!r}"
    if fld.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(expected)
    elif fld.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(expected)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(expected)
    elif fld.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(expected)
    elif fld.kind in ("str", "expr"):
        if not isinstance(value, str):
            raise ValueError(expected)
        if fld.kind == "expr":
            check_expression(value)
    elif fld.kind == "choice":
        if not isinstance(value, str) or value not in fld.choices:
            raise ValueError(expected)
    elif fld.kind == "list":
        if not isinstance(value, list):
            raise ValueError(expected)
    elif fld.kind == "table":
        if not isinstance(value, dict):
            raise ValueError(expected)
    if fld.min is not None and fld.kind in ("int", "float"):
        too_small = value <= fld.min if fld.min_exclusive else value < fld.min
        if too_small:
            raise ValueError(expected)
    if fld.check is not None:
        fld.check(value, context or {})
    return value


# --- expressions (data formulas, report lines) ------------------------------------------


def check_expression(text: str, names: tuple[str, ...] = ()) -> None:
    """Reject expressions that do not parse or use anything but arithmetic and known names."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"expression {text!r} does not parse: {err.msg}") from None
    allowed = set(EXPR_FUNCTIONS) | set(EXPR_CONSTANTS) | {"x", "p", "d"} | set(names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            raise ValueError(f"expression {text!r}: attribute access is not allowed")
        if isinstance(node, ast.Name) and node.id not in allowed:
            raise ValueError(
                f"expression {text!r}: unknown name {node.id!r} "
                f"(known: {', '.join(sorted(allowed))})"
            )


# --- validation ------------------------------------------------------------------------------


class _Where:
    """Builds error messages that name the file and the key."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, key: str, problem: str) -> ConfigError:
        where = f"{self.origin}: " if self.origin else ""
        return ConfigError(f"{where}{key}: {problem}" if key else f"{where}{problem}")


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.(\w+)|\[(\d+|\.\.\.)\]")
_NAMED = re.compile(r"field `(\w+)`")
_LISTS = {  # [model] keys holding tagged tables: tag key, what it names, the known names
    "layers": ("type", "layer", LAYERS),
    "init": ("dist", "init", INIT_DISTS),
}


def _parse(err: msgspec.ValidationError) -> tuple[str, list[Any]]:
    """msgspec's message and its path: "Expected `int` - at `$.layers[1].in_features`"."""
    match = _AT.match(str(err))
    assert match is not None
    steps = _STEP.findall(match["path"] or "")
    return match["msg"], [int(i) if i.isdigit() else (name or i) for name, i in steps]


def _explain(
    where: _Where, prefix: str, err: msgspec.ValidationError, table: Mapping[str, Any],
    fields: Mapping[str, Field],
) -> ConfigError:  # fmt: skip
    """Today's message for a msgspec error: the key in preset terms and what was expected."""
    msg, path = _parse(err)
    if prefix == "[model] " and path and path[0] in _LISTS:
        key, items = path[0], table[path[0]]
        tag, noun, known = _LISTS[key]
        if len(path) == 1:
            problem = f"expected a list of tables, got {_type_name(items)}"
            return where.fail(f"{prefix}{key}", problem)
        label = f"{prefix}{key}[{path[1]}]"
        item = items[path[1]]
        if not isinstance(item, dict):
            like = ' like {type = "Linear", ...}' if key == "layers" else ""
            return where.fail(label, f"expected a table{like}, got {item!r}")
        name = item.get(tag)
        if not isinstance(name, str) or name not in known:
            return where.fail(
                f"{label}.{tag}", f"unknown {noun} {name!r} (known: {', '.join(known)})"
            )
        sub = dict(known[name])
        if key == "init":
            sub = {"params": Field("str"), "dist": Field("str"), **sub}
        return _explain_field(where, f"{label}.", msg, path[2:], item, sub)
    return _explain_field(where, prefix, msg, path, table, fields)


def _explain_field(
    where: _Where, prefix: str, msg: str, path: list[Any], table: Mapping[str, Any],
    fields: Mapping[str, Field],
) -> ConfigError:  # fmt: skip
    named = _NAMED.search(msg)
    if not path and named and msg.startswith("Object contains unknown field"):
        known = ", ".join(fields) or "none"
        return where.fail(f"{prefix}{named[1]}", f"unknown key (known keys: {known})")
    if not path and named and msg.startswith("Object missing required field"):
        fld = fields.get(named[1], Field(named[1]))
        return where.fail(f"{prefix}{named[1]}", f"missing ({fld.describe()})")
    keys = [path[0]] if path and path[0] in fields else list(table)  # `[...]`: some dict key
    for key in keys:
        if key not in fields or key not in table:
            continue
        try:
            check_value(fields[key], table[key], table)
        except ValueError as problem:
            return where.fail(f"{prefix}{key}", str(problem))
    key = f"{prefix}{path[0]}" if path else prefix.rstrip(" .")
    return where.fail(key, msg[:1].lower() + msg[1:])


def _plain(obj: Any, raw: Any) -> Any:
    """A converted Struct as plain dicts: given keys in the file's order, then the defaults."""
    if isinstance(obj, Struct):
        raw = raw if isinstance(raw, dict) else {}
        values = {name: getattr(obj, name) for name in obj.__struct_fields__}
        config = obj.__struct_config__
        if config.tag_field is not None:
            values[config.tag_field] = config.tag
        keys = [k for k in raw if k in values] + [k for k in values if k not in raw]
        if config.tag_field == "type":  # layers: the class name first
            keys.remove("type")
            keys.insert(0, "type")
        return {k: _plain(values[k], raw.get(k)) for k in keys}
    if isinstance(obj, list):
        raws = raw if isinstance(raw, list) and len(raw) == len(obj) else [None] * len(obj)
        return [_plain(v, r) for v, r in zip(obj, raws, strict=True)]
    return obj


_END = object()  # a key no table has: scan a whole table


def _scan(
    where: _Where, prefix: str, table: Mapping[str, Any], fields: Mapping[str, Field],
    stop: list[Any] | None = None,
) -> None:  # fmt: skip
    """What a type cannot say, key by key: finite numbers and well-formed expressions.

    With `stop` (the path of msgspec's first error) only the keys before it are checked, so
    that the first problem in the file is the one reported, as always.
    """
    for key, value in table.items():
        fld = fields.get(key)
        here = stop is not None and key == stop[0]
        if here and not (len(stop) > 1 and fld is not None and fld.kind in ("layers", "inits")):
            return
        if fld is None:
            continue
        if fld.kind == "float" and isinstance(value, float) and not math.isfinite(value):
            raise where.fail(f"{prefix}{key}", _problem(fld, value))
        if fld.kind == "expr" and isinstance(value, str):
            try:
                check_expression(value)
            except ValueError as err:
                raise where.fail(f"{prefix}{key}", str(err)) from None
        if fld.kind in ("layers", "inits") and isinstance(value, list):
            name = "layers" if fld.kind == "layers" else "init"
            tag, _, known = _LISTS[name]
            for i, item in enumerate(value):
                last = here and i == stop[1]
                if not isinstance(item, dict) or not isinstance(item.get(tag), str):
                    return
                if item[tag] not in known:
                    return
                sub = known[item[tag]]
                _scan(where, f"{prefix}{name}[{i}].", item, sub, stop[2:] if last else None)
                if last:
                    return
        if here:
            return


def _problem(fld: Field, value: Any) -> str:
    try:
        check_value(fld, value)
    except ValueError as err:
        return str(err)
    return f"unexpected value {value!r}"


def _convert(
    where: _Where, prefix: str, table: Mapping[str, Any], typ: Any, fields: Mapping[str, Field]
) -> dict[str, Any]:
    try:
        obj = msgspec.convert(table, typ, strict=True)
    except msgspec.ValidationError as err:
        msg, path = _parse(err)
        if "..." not in path:  # a dict key: _explain goes through the table in order
            named = _NAMED.search(msg)
            if named and msg.startswith("Object contains unknown field"):
                path.append(named[1])
            elif named:  # a missing field: msgspec has seen the whole table
                path.append(_END)
            _scan(where, prefix, table, fields, path or [_END])
        raise _explain(where, prefix, err, table, fields) from None
    out = _plain(obj, table) if isinstance(obj, Struct) else dict(obj)
    _scan(where, prefix, table, fields)
    return out


def validate(raw: Mapping[str, Any], origin: str = "") -> dict[str, Any]:
    """Check a parsed preset and return the resolved config with every default filled in."""
    where = _Where(origin)
    for key in raw:
        if key not in TOP_FIELDS and key not in SECTIONS:
            known = ", ".join([*TOP_FIELDS, *(f"[{s}]" for s in SECTIONS)])
            raise where.fail(key, f"unknown key (known: {known})")
    top = {k: v for k, v in raw.items() if k in TOP_FIELDS}
    config = _convert(where, "", top, PresetHead, TOP_FIELDS)
    if not config["title"]:
        config["title"] = config["name"]
    for section in REQUIRED_SECTIONS:
        if section not in raw:
            raise where.fail(f"[{section}]", "missing section")
    for section in SECTIONS:
        if section not in raw:
            continue
        table = raw[section]
        if not isinstance(table, dict):
            raise where.fail(f"[{section}]", f"expected a table, got {_type_name(table)}")
        if section == "data" and "source" not in table:
            raise where.fail("[data] source", f"missing (one of {', '.join(DATA_SOURCES)})")
        fields = section_fields(raw, section)
        if section == "report":
            fields = {k: Field("expr") for k in table}
        config[section] = _convert(where, f"[{section}] ", table, _SECTION_TYPES[section], fields)
    model = config["model"]
    for layer in model["layers"]:
        if layer["type"] == "MaxPool2d" and layer["stride"] == 0:
            layer["stride"] = layer["kernel_size"]
    _cross_checks(where, config)
    return config


MAX_NAME = 100


def _cross_checks(where: _Where, config: dict[str, Any]) -> None:
    model, optim, train, data = config["model"], config["optim"], config["train"], config["data"]
    if len(config["name"]) > MAX_NAME:
        raise where.fail("name", f"at most {MAX_NAME} characters (it names the run folder)")
    given = [k for k in ONE_OF["model"] if model[k]]
    if len(given) != 1:
        raise where.fail("[model]", "give exactly one of layers, builtin or factory")
    if model["factory"] and ":" not in model["factory"]:
        raise where.fail("[model] factory", f"expected 'module:function', got {model['factory']!r}")
    for key, names in OPTIM_ONLY.items():
        if optim[key] != OPTIM_FIELDS[key].default and optim["name"] not in names:
            raise where.fail(
                f"[optim] {key}", f"not used by {optim['name']} (only {', '.join(names)})"
            )
    _list_checks(where, "[optim] ", optim, OPTIM_FIELDS)
    if len([k for k in ONE_OF["train"] if train[k]]) != 1:
        raise where.fail("[train]", "give exactly one of epochs or steps")
    if config["task"] == "classification" and train["loss"] != "cross_entropy":
        raise where.fail("[train] loss", "a classification preset needs cross_entropy")
    if config["task"] == "regression" and train["loss"] == "cross_entropy":
        raise where.fail("[train] loss", "cross_entropy needs a classification task")
    check_device_name(train["device"], where, "[train] device")
    _list_checks(where, "[data] ", data, section_fields(config, "data"))
    for rule in model["init"]:
        if not rule["params"]:
            raise where.fail("[model] init", "params must be a glob such as '*.weight'")
        fnmatch.translate(rule["params"])
    _recipe_checks(where, config)


def _recipe_checks(where: _Where, config: dict[str, Any]) -> None:
    """[schedule], [early_stop] and the recipe keys of [train], beyond their types."""
    train = config["train"]
    if train["precision"] != "fp32" and train["dtype"] != "float32":
        raise where.fail(
            "[train] precision", f"{train['precision']} autocast needs dtype float32, not "
            f"{train['dtype']}"
        )  # fmt: skip
    schedule = config.get("schedule")
    if schedule is not None:
        name = schedule["name"]
        for key, names in SCHEDULE_ONLY.items():
            if schedule[key] != SCHEDULE_FIELDS[key].default and name not in names:
                only = ", ".join(names)
                raise where.fail(f"[schedule] {key}", f"not used by {name} (only {only})")
    early = config.get("early_stop")
    if early is not None:
        if "eval" not in config:
            raise where.fail(
                "[early_stop]", "needs an [eval] section: it watches the test split's metric"
            )
        if early["metric"] == "accuracy" and config["task"] != "classification":
            raise where.fail("[early_stop] metric", "accuracy needs a classification task")


def _list_checks(
    where: _Where, prefix: str, table: Mapping[str, Any], fields: Mapping[str, Field]
) -> None:
    for key, fld in fields.items():
        if fld.check is not None:
            try:
                fld.check(table[key], table)
            except ValueError as err:
                raise where.fail(f"{prefix}{key}", str(err)) from None


def check_device_name(name: str, where: _Where | None = None, key: str = "--device") -> None:
    """Syntax only; whether the device exists is checked when the run starts."""
    ok = name in ("auto", "cpu", "cuda", "mps") or (name.startswith("cuda:") and name[5:].isdigit())
    if not ok:
        problem = f"unknown device {name!r} (expected {DEVICE_HELP})"
        raise (where or _Where("")).fail(key, problem)


# --- JSON Schema -------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a preset file, for editors (taplo: `#:schema ./preset.schema.json`).

    What a type cannot say is added here: exactly one of layers/builtin/factory and of
    epochs/steps, and the optimiser-only keys at their defaults for the other optimisers.
    The expression syntax and the data-dependent checks stay with `validate`.
    """
    schema = msgspec.json.schema(Preset)
    defs = schema["$defs"]
    for section, keys in NOT_GIVEN.items():
        for key in keys:
            defs[section.title()]["properties"][key].pop("default", None)
    for section, keys in ONE_OF.items():
        defs[section.title()]["oneOf"] = [{"required": [k]} for k in keys]
    defs["Optim"]["allOf"] = [
        {
            "if": {"properties": {"name": {"not": {"enum": list(names)}}}, "required": ["name"]},
            "then": {"properties": {key: {"const": OPTIM_FIELDS[key].default}}},
        }
        for key, names in OPTIM_ONLY.items()
    ]
    defs["Schedule"]["allOf"] = [  # a missing name is "constant"
        {
            "if": {
                "properties": {"name": {"not": {"enum": list(names)}}},
                **({"required": ["name"]} if "constant" in names else {}),
            },
            "then": {"properties": {key: {"const": SCHEDULE_FIELDS[key].default}}},
        }
        for key, names in SCHEDULE_ONLY.items()
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "torchdeck preset",
        "description": "A torchdeck preset file (TOML). See README.md, 'Preset format'.",
        **schema,
    }
