"""Smoothness regularisers."""

import pytest
import torch

import regedu
from regedu import transforms as T


def test_diffusion_zero_for_translation_positive_otherwise():
    t = torch.zeros(1, 2, 16, 16)
    t[:, 0] = 3.0
    assert regedu.diffusion(t).item() == 0.0
    assert regedu.diffusion(regedu.random_dvf((16, 16), 2.0, 3.0, seed=0)).item() > 0


def test_diffusion_value_of_linear_field():
    # u_0 = 0.1 * i: gradient d u_0 / d i = 0.1 everywhere -> mean squared gradient 0.01
    u = torch.zeros(1, 2, 10, 10)
    u[:, 0] = 0.1 * torch.arange(10.0)[:, None]
    assert regedu.diffusion(u).item() == pytest.approx(0.01, rel=1e-5)


@pytest.mark.parametrize("shape", [(16, 16), (8, 8, 8)])
def test_bending_energy_zero_for_affine_fields(shape):
    ndim = len(shape)
    params = torch.tensor([0.3, 1.2, 0.8, 0.1, 1.0, 2.0]) if ndim == 2 else torch.tensor(
        [0.1, 0.2, -0.3, 1.1, 0.9, 1.2, 0.1, 0.0, -0.1, 1.0, 2.0, 3.0])
    u = regedu.affine_to_dvf(T.affine_matrix(params.double()), shape)
    assert regedu.bending_energy(u).item() == pytest.approx(0.0, abs=1e-20)
    assert regedu.diffusion(u).item() > 0


def test_bending_energy_of_quadratic_field():
    # u_0 = 0.5 * a * i^2: second derivative a everywhere
    a = 0.2
    u = torch.zeros(1, 2, 12, 12, dtype=torch.float64)
    u[:, 0] = 0.5 * a * torch.arange(12.0, dtype=torch.float64)[:, None] ** 2
    assert regedu.bending_energy(u).item() == pytest.approx(a**2, rel=1e-6)


def test_regularisers_are_differentiable_and_batched():
    u = regedu.random_dvf((12, 12), 2.0, 3.0, batch=3, seed=1).requires_grad_(True)
    per = regedu.bending_energy(u, reduction="none")
    assert per.shape == (3,)
    (regedu.diffusion(u) + per.sum()).backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
