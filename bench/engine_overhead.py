"""Engine overhead: torchdeck's training loop against a hand-written PyTorch loop.

Both train the same model on the same data with the same seed and batch order, one after
the other, several times interleaved, in one process. Prints throughput (steps/s) of each,
their ratio (engine/raw, median over the rounds) and whether the final weights are bitwise
equal. Cases: the `kink` model at batch 2, and the `cifar10-cnn` model on random 3x32x32
data at batch 64.

    .venv/bin/python bench/engine_overhead.py [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch import nn

from engine.build import prepare_run
from engine.presets import resolve_config
from engine.train.loop import Trainer


def order_seed(seed: int, epoch: int) -> int:
    """The batch-order seed; written out here so the raw loop does not call the engine."""
    return (seed * 1_000_003 + epoch) % (2**63)


# --- the raw loops --------------------------------------------------------------------------


class Clock:
    """Wall time and this process's CPU time (all threads) since start."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def raw_kink(epochs: int, seed: int) -> tuple[tuple[float, float], nn.Module]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                nn.init.normal_(p, 0.0, 0.3)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                nn.init.constant_(p, 1.0)
    x = torch.arange(-20, 20, 2, dtype=torch.float64)
    y = torch.where(x >= 0, 2 * x + 1, torch.tensor(0.0, dtype=torch.float64))
    x, y = x.reshape(-1, 1).float(), y.reshape(-1, 1).float()
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    bs = 2
    clock = Clock()
    for epoch in range(epochs):
        perm = torch.randperm(
            len(x), generator=torch.Generator().manual_seed(order_seed(seed, epoch))
        )
        for i in range(len(x) // bs):
            idx = perm[i * bs : (i + 1) * bs]
            loss = 0.5 * nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return clock.read(), model


def cnn_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 3), nn.ReLU(),
        nn.Conv2d(64, 128, 3), nn.ReLU(),
        nn.Conv2d(128, 128, 3), nn.ReLU(),
        nn.Conv2d(128, 64, 3),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10),
    )  # fmt: skip


def random_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(12345)
    x = torch.randn((n, 3, 32, 32), generator=gen)
    return x, torch.randint(0, 10, (n,), generator=gen)


def raw_cnn(steps: int, seed: int, bs: int) -> tuple[tuple[float, float], nn.Module]:
    x, y = random_images(steps * bs)
    torch.manual_seed(seed)
    model = cnn_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    clock = Clock()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(order_seed(seed, 0)))
    for i in range(steps):
        idx = perm[i * bs : (i + 1) * bs]
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return clock.read(), model


# --- the engine -------------------------------------------------------------------------------


def engine_run(config: dict) -> tuple[tuple[float, float], nn.Module]:
    with tempfile.TemporaryDirectory() as runs:
        prep = prepare_run(config, runs)
        trainer = Trainer(prep)
        clock = Clock()
        trainer.run()
        return clock.read(), prep.model


def kink_config(epochs: int, seed: int) -> dict:
    return resolve_config(
        "kink", {"train.epochs": epochs, "train.seed": seed, "train.device": "cpu"}
    )


def cnn_config(steps: int, seed: int, bs: int) -> dict:
    base = resolve_config("cifar10-cnn")
    raw = {k: base[k] for k in ("name", "title", "description", "task", "model", "optim")}
    raw["data"] = {"source": "random", "shape": [3, 32, 32], "n_samples": steps * bs, "classes": 10}
    raw["train"] = {
        "epochs": 1,
        "batch_size": bs,
        "loss": "cross_entropy",
        "seed": seed,
        "device": "cpu",
    }
    return resolve_config(raw)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def compare(name: str, steps: int, run_engine, run_raw, rounds: int) -> None:
    wall_ratios, cpu_ratios, eng_rates, raw_rates, equal = [], [], [], [], True
    for r in range(rounds):
        pair = [("engine", run_engine), ("raw", run_raw)]
        if r % 2:
            pair.reverse()  # alternate who goes first, so drift hits both alike
        result = {}
        for who, fn in pair:
            (wall, cpu), model = fn()
            result[who] = (steps / wall, steps / cpu, model)
        eng, raw = result["engine"], result["raw"]
        equal &= same_weights(eng[2], raw[2])
        wall_ratios.append(eng[0] / raw[0])
        cpu_ratios.append(eng[1] / raw[1])
        eng_rates.append(eng[0])
        raw_rates.append(raw[0])
        print(
            f"  {name} round {r + 1}: engine {eng[0]:,.1f} steps/s, raw {raw[0]:,.1f} steps/s, "
            f"wall ratio {wall_ratios[-1]:.3f}, cpu-time ratio {cpu_ratios[-1]:.3f}",
            flush=True,
        )
    med = statistics.median
    print(
        f"{name}: engine/raw = {med(wall_ratios):.3f} wall-clock (median of {rounds}; "
        f"min {min(wall_ratios):.3f}, max {max(wall_ratios):.3f}), {med(cpu_ratios):.3f} by CPU "
        f"time; engine {med(eng_rates):,.1f} steps/s, raw {med(raw_rates):,.1f} steps/s; "
        f"final weights bitwise equal: {'yes' if equal else 'NO'}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--only", choices=["kink", "cnn"], help="run one case")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed = 1
    epochs = 60 if args.quick else 600
    cnn_steps, bs = (3, 64) if args.quick else (30, 64)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu")
    if args.only != "cnn":
        compare(
            "kink (batch 2)",
            epochs * 10,
            lambda: engine_run(kink_config(epochs, seed)),
            lambda: raw_kink(epochs, seed),
            args.rounds,
        )
    if args.only != "kink":
        compare(
            "cifar10-cnn model, random 3x32x32 (batch 64)",
            cnn_steps,
            lambda: engine_run(cnn_config(cnn_steps, seed, bs)),
            lambda: raw_cnn(cnn_steps, seed, bs),
            1 if args.quick else max(2, args.rounds // 2),
        )


if __name__ == "__main__":
    main()
