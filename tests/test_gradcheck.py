"""The hand-derived gradients of the seed tutorials equal autograd's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.models import LegendreModel, LegendreP3


def test_dense_relu_manual_backward_equals_autograd():
    """numpy tutorial: dL/dy_pred = y_pred - y, dW = dZ^T x / batch, db = mean(dZ) (2 outputs)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(512, 10, generator=gen, dtype=torch.float64)
    w_real = torch.rand(2, 10, generator=gen, dtype=torch.float64)
    y = x @ w_real.T + torch.rand(2, generator=gen, dtype=torch.float64)
    w = torch.rand(2, 10, generator=gen, dtype=torch.float64).requires_grad_()
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)

    z = x @ w.T + b
    y_pred = torch.relu(z)
    F.mse_loss(y_pred, y).backward()

    with torch.no_grad():
        d_pred = y_pred - y  # the tutorial's MSE derivative
        d_z = d_pred * (z > 0)  # ReLU derivative
        d_w = d_z.T @ x / len(x)
        d_b = d_z.mean(dim=0)
    assert torch.allclose(w.grad, d_w, rtol=1e-12, atol=1e-14)
    assert torch.allclose(b.grad, d_b, rtol=1e-12, atol=1e-14)


def test_softmax_cross_entropy_one_hidden_layer():
    """dJ/dz2 = y_hat - y, dJ/dU = delta1^T x, delta1 = (delta2 W2) * (h > 0), batch summed."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (8,), generator=gen)
    U = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    W = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    h = torch.relu(x @ U.T)
    logits = h @ W.T
    F.cross_entropy(logits, labels, reduction="sum").backward()
    with torch.no_grad():
        y = F.one_hot(labels, 3).double()
        delta2 = torch.softmax(logits, dim=1) - y
        d_w = delta2.T @ h
        delta1 = (delta2 @ W) * (h > 0)
        d_u = delta1.T @ x
    assert torch.allclose(W.grad, d_w, rtol=1e-12, atol=1e-13)
    assert torch.allclose(U.grad, d_u, rtol=1e-12, atol=1e-13)


def test_legendre_custom_function_gradient():
    t = torch.randn(20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LegendreP3.apply, (t,))


def test_legendre_model_starts_where_the_tutorial_does():
    model = LegendreModel()
    assert [p.item() for p in model.parameters()] == [0.0, -1.0, 0.0, torch.tensor(0.3).item()]
