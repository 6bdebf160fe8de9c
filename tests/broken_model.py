"""A model whose forward pass fails after the first few calls (for failure tests)."""

from torch import nn


class Breaks(nn.Linear):
    def __init__(self) -> None:
        super().__init__(1, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 3:
            raise RuntimeError("boom: the model broke at its fourth call")
        return super().forward(x)


def make() -> nn.Module:
    return Breaks()
