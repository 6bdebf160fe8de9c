"""A gradient check: autograd against central finite differences, in float64 on CPU.

The model is built from the config (seeded, initialised as a run would be), moved to
float64, and put in eval mode (no dropout noise); the loss is the preset's, on a small
batch of the preset's data (samples spread over the dataset). For each parameter tensor
autograd's gradient is compared with (L(p + h) - L(p - h)) / 2h, element by element (all
elements of a small tensor, an evenly spread sample of a big one). Each custom autograd
Function the forward pass calls (found in the autograd graph) is checked on its real inputs
with torch.autograd.gradcheck, plus the same finite differences of a random projection of
its output. On `dense-relu` and `legendre-sin` the tutorials' hand-derived gradients are
shown beside autograd's.

Everything returns plain data; `cmd_gradcheck` prints it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

STEP = 1e-6
ATOL = 1e-6  # an element passes when |autograd - numeric| <= ATOL + RTOL * |numeric|
RTOL = 1e-4
BATCH = 16
MAX_ELEMENTS = 64


@dataclass(frozen=True)
class GradRow:
    name: str  # parameter name, or the Function's qualified name
    kind: str  # "parameter" | "function"
    module: str  # "0 (Linear)" for a parameter; the Function's module for a function
    shape: str
    checked: int  # elements compared
    total: int
    max_abs: float
    max_rel: float
    ok: bool
    note: str = ""


@dataclass(frozen=True)
class HandRow:
    name: str
    hand: list[float]
    autograd: list[float]
    max_abs: float


@dataclass
class GradReport:
    preset: str
    batch: int
    loss: float
    rows: list[GradRow] = field(default_factory=list)
    hand: list[HandRow] = field(default_factory=list)
    hand_formula: str = ""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def failing(self) -> list[GradRow]:
        return [r for r in self.rows if not r.ok]


def _batch(data: Any, n: int):
    import torch

    from engine.data import TensorData

    if isinstance(data, TensorData):
        count = len(data.x)
        idx = torch.linspace(0, count - 1, min(n, count)).round().long().unique()
        return data.x[idx], data.y[idx]
    x, y = next(iter(data.batches(0)))
    return x[:n], y[:n]


def _errors(auto, numeric) -> tuple[float, float, bool]:
    import torch

    diff = (auto - numeric).abs()
    scale = torch.maximum(auto.abs(), numeric.abs())
    rel = diff / scale.clamp_min(1e-8)  # near-zero gradients: no meaningless 100 % errors
    ok = bool((diff <= ATOL + RTOL * numeric.abs()).all())
    return float(diff.max()) if diff.numel() else 0.0, float(rel.max()) if rel.numel() else 0.0, ok


def _sample(total: int) -> list[int]:
    if total <= MAX_ELEMENTS:
        return list(range(total))
    return sorted({round(i * (total - 1) / (MAX_ELEMENTS - 1)) for i in range(MAX_ELEMENTS)})


def _module_of(model: Any, name: str) -> str:
    owner = name.rpartition(".")[0]
    try:
        mod = model.get_submodule(owner) if owner else model
    except AttributeError:
        return owner or "-"
    return f"{owner} ({type(mod).__name__})" if owner else type(mod).__name__


def _custom_functions(root: Any) -> list[type]:
    """The custom autograd Function classes in the graph under `root` (a grad_fn)."""
    found: list[type] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if cls is not None and cls not in found:
            found.append(cls)
        stack.extend(fn for fn, _ in getattr(node, "next_functions", ()))
    return found


def _capture_inputs(fn_cls: type, run: Any) -> list[tuple]:
    """The arguments each call of `fn_cls.apply` gets while `run()` runs."""
    calls: list[tuple] = []
    had_own = "apply" in fn_cls.__dict__
    original = fn_cls.__dict__.get("apply")
    base_apply = fn_cls.apply

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return base_apply(*args, **kwargs)

    fn_cls.apply = staticmethod(recording)
    try:
        run()
    finally:
        if had_own:
            fn_cls.apply = original
        else:
            del fn_cls.apply
    return calls


def _check_function(fn_cls: type, args: tuple) -> GradRow:
    import torch

    name = f"{fn_cls.__module__}.{fn_cls.__qualname__}"
    inputs = tuple(
        a.detach().double().clone().requires_grad_(a.is_floating_point())
        if isinstance(a, torch.Tensor)
        else a
        for a in args
    )
    tensors = [a for a in inputs if isinstance(a, torch.Tensor) and a.requires_grad]
    shape = "x".join(str(s) for s in tensors[0].shape) if tensors else "-"
    total = sum(t.numel() for t in tensors)
    try:
        passed = torch.autograd.gradcheck(
            fn_cls.apply, inputs, eps=STEP, atol=ATOL, rtol=RTOL, raise_exception=False
        )
    except Exception as err:  # user code: a backward that raises fails the check
        return GradRow(name, "function", fn_cls.__module__, shape, 0, total, math.nan,
                       math.nan, False, f"{type(err).__name__}: {err}")  # fmt: skip
    # finite differences of <v, f(x)> for the table's numbers
    out = fn_cls.apply(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(0)
    vs = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outs]

    def proj() -> torch.Tensor:
        with torch.no_grad():
            res = fn_cls.apply(*inputs)
            res = res if isinstance(res, tuple) else (res,)
            return sum((r * v).sum() for r, v in zip(res, vs, strict=True))

    grads = torch.autograd.grad(
        sum((o * v).sum() for o, v in zip(outs, vs, strict=True)), tensors, allow_unused=True
    )
    worst_abs, worst_rel, checked = 0.0, 0.0, 0
    for t, g in zip(tensors, grads, strict=True):
        g = torch.zeros_like(t) if g is None else g
        idx = _sample(t.numel())
        numeric = torch.empty(len(idx), dtype=torch.float64)
        flat = t.data.view(-1)
        for k, i in enumerate(idx):
            old = float(flat[i])
            flat[i] = old + STEP
            up = float(proj())
            flat[i] = old - STEP
            down = float(proj())
            flat[i] = old
            numeric[k] = (up - down) / (2 * STEP)
        a, r, _ = _errors(g.reshape(-1)[idx].detach(), numeric)
        worst_abs, worst_rel, checked = max(worst_abs, a), max(worst_rel, r), checked + len(idx)
    note = "" if passed else "torch.autograd.gradcheck failed"
    return GradRow(name, "function", fn_cls.__module__, shape, checked, total, worst_abs,
                   worst_rel, bool(passed), note)  # fmt: skip


def check_gradients(config: dict[str, Any], batch: int = BATCH) -> GradReport:
    """Compare autograd with central finite differences for every parameter tensor of the
    config's model and every custom autograd Function it calls; float64, CPU."""
    import torch

    from engine.build import check_model_fits
    from engine.data import build_data
    from engine.losses import LOSSES
    from engine.models import build_model

    config = copy.deepcopy(config)
    config["train"]["dtype"] = "float64"
    device = torch.device("cpu")
    data = build_data(config, device)
    torch.manual_seed(config["train"]["seed"])
    model = build_model(config["model"]).to(dtype=torch.float64)
    loss_fn = LOSSES[config["train"]["loss"]]
    check_model_fits(model, data, loss_fn)
    model.eval()
    x, y = _batch(data, batch)
    params = dict(model.named_parameters())

    def loss_value() -> float:
        with torch.no_grad():
            return float(loss_fn(model(x), y))

    model.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    report = GradReport(config["name"], len(x), loss.item())  # item-ok: once, not per step
    for name, p in params.items():
        auto = p.grad if p.grad is not None else torch.zeros_like(p)
        idx = _sample(p.numel())
        numeric = torch.empty(len(idx), dtype=torch.float64)
        flat = p.data.view(-1)
        for k, i in enumerate(idx):
            old = float(flat[i])
            flat[i] = old + STEP
            up = loss_value()
            flat[i] = old - STEP
            down = loss_value()
            flat[i] = old
            numeric[k] = (up - down) / (2 * STEP)
        a, r, ok = _errors(auto.reshape(-1)[idx], numeric)
        shape = "x".join(str(s) for s in p.shape) or "scalar"
        report.rows.append(
            GradRow(
                name, "parameter", _module_of(model, name), shape, len(idx), p.numel(), a, r, ok
            )
        )
    for fn_cls in _custom_functions(loss.grad_fn):
        calls = _capture_inputs(fn_cls, lambda: model(x))
        if calls:
            report.rows.append(_check_function(fn_cls, calls[0]))
    _hand_derived(config, model, x, y, report)
    return report


def _hand_derived(config: dict[str, Any], model: Any, x: Any, y: Any, report: GradReport) -> None:
    """The seed tutorials' backward, written out, next to autograd's (dense-relu and
    legendre-sin, when the model and loss are still the tutorial's)."""
    import torch

    from engine.losses import LOSSES
    from engine.models import LegendreModel

    name, loss_name = config["name"], config["train"]["loss"]
    layers = [s["type"] for s in config["model"]["layers"]]
    with torch.no_grad():
        if name == "dense-relu" and layers == ["Linear", "ReLU"] and loss_name == "mse":
            if y.shape[1] != 2:  # the tutorial's d_pred = y_pred - y is mse's for 2 outputs
                return
            w, b = model[0].weight, model[0].bias
            z = x @ w.T + b
            d_z = (torch.relu(z) - y) * (z > 0)
            hand = {"0.weight": d_z.T @ x / len(x), "0.bias": d_z.mean(dim=0)}
            report.hand_formula = (
                "numpy tutorial: dL/dy_pred = y_pred - y; dZ = that * (z > 0); "
                "dW = dZ^T x / batch; db = mean(dZ)"
            )
        elif name == "legendre-sin" and isinstance(model, LegendreModel) and loss_name == "sse":
            a, b, c, d = model.a, model.b, model.c, model.d
            t = c + d * x
            p3 = 0.5 * (5 * t**3 - 3 * t)
            g = 2.0 * (a + b * p3 - y)
            dp3 = 1.5 * (5 * t**2 - 1)
            hand = {"a": g.sum(), "b": (g * p3).sum(), "c": (g * b * dp3).sum(),
                    "d": (g * b * dp3 * x).sum()}  # fmt: skip
            report.hand_formula = (
                "pytorch tutorial: grad_y_pred = 2 (y_pred - y); P3'(t) = 1.5 (5t^2 - 1); "
                "grad_a = sum(g), grad_b = sum(g P3), grad_c = sum(g b P3'), "
                "grad_d = sum(g b P3' x)"
            )
        else:
            return
    model.zero_grad(set_to_none=True)
    LOSSES[loss_name](model(x), y).backward()
    params = dict(model.named_parameters())
    for pname, value in hand.items():
        auto = params[pname].grad
        report.hand.append(
            HandRow(
                pname,
                [float(v) for v in value.reshape(-1)],
                [float(v) for v in auto.reshape(-1)],
                float((value - auto).abs().max()),
            )
        )


# --- the command line (prints; the app calls check_gradients) ----------------------------
def _num(v: float) -> str:
    return "-" if v != v else f"{v:.2e}"


def format_report(report: GradReport) -> str:
    from engine.report import table

    rows = [
        [r.name, r.kind, r.module, r.shape, f"{r.checked}/{r.total}", _num(r.max_abs),
         _num(r.max_rel), "pass" if r.ok else "FAIL" + (f" ({r.note})" if r.note else "")]
        for r in report.rows
    ]  # fmt: skip
    out = [
        f"gradcheck {report.preset}: float64 on cpu, {report.batch} samples, loss "
        f"{report.loss:.6g}; central differences, h={STEP:g}; "
        f"pass: |autograd - numeric| <= {ATOL:g} + {RTOL:g} |numeric|",
        table(
            rows,
            ["name", "kind", "module", "shape", "checked", "max abs err", "max rel err", "result"],
        ),  # fmt: skip
    ]
    if report.hand:
        out.append("")
        out.append(f"hand-derived gradients ({report.hand_formula}):")
        hand_rows = []
        for h in report.hand:
            shown = h.hand[:4]
            more = " ..." if len(h.hand) > 4 else ""
            hand_rows.append([
                h.name,
                " ".join(f"{v:.6g}" for v in shown) + more,
                " ".join(f"{v:.6g}" for v in h.autograd[:4]) + more,
                _num(h.max_abs),
            ])  # fmt: skip
        out.append(table(hand_rows, ["parameter", "hand-derived", "autograd", "max abs diff"]))
    return "\n".join(out)


def cmd_gradcheck(preset: str, sets: Sequence[str], preset_dirs: Sequence[str]) -> int:
    import sys

    from engine.presets import resolve_config

    report = check_gradients(resolve_config(preset, list(sets), preset_dirs))
    print(format_report(report))
    if report.ok:
        print("all gradients match")
        return 0
    params = [r for r in report.failing if r.kind == "parameter"]
    funcs = [r for r in report.failing if r.kind == "function"]
    parts = []
    if params:
        modules = sorted({r.module for r in params})
        parts.append(
            f"parameters {', '.join(r.name for r in params)} (module {', '.join(modules)})"
        )
    if funcs:
        parts.append(f"custom autograd Function {', '.join(r.name for r in funcs)}")
    print(f"torchdeck: gradcheck failed: {'; '.join(parts)}", file=sys.stderr)
    return 1


# --- a child process for the app: `python -m engine.gradcheck` ----------------------------
def child_main() -> int:
    """Read {"config"} as JSON on stdin; write one JSON line: {"report": {...}} or
    {"error": ...}."""
    import json
    import sys
    from dataclasses import asdict

    from engine.errors import TorchdeckError

    request = json.loads(sys.stdin.read())
    try:
        report = check_gradients(request["config"])
    except TorchdeckError as err:
        print(json.dumps({"error": str(err)}), flush=True)
        return 2
    except Exception as err:  # a model that breaks: one line, not a traceback
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
        return 1
    print(json.dumps({"report": asdict(report)}), flush=True)
    return 0


def report_from_dict(data: dict[str, Any]) -> GradReport:
    """A GradReport back from child_main's JSON."""
    return GradReport(
        data["preset"],
        data["batch"],
        data["loss"],
        rows=[GradRow(**r) for r in data.get("rows", [])],
        hand=[HandRow(**h) for h in data.get("hand", [])],
        hand_formula=data.get("hand_formula", ""),
    )


if __name__ == "__main__":
    raise SystemExit(child_main())
