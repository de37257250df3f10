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


@pytest.mark.parametrize("shape, spacing", [((40, 36), 4.0), ((24, 20), (2.0, 3.5)), ((2, 9), 1.0), ((12, 10, 9), 3.0),
                                             ((3, 9, 9), (1.0, 2.0, 2.0))])
@pytest.mark.parametrize("kind, dense", [("bending", regedu.regularisers.bending_energy), ("diffusion", regedu.regularisers.diffusion)])
def test_bspline_regulariser_equals_the_dense_value_and_gradient(shape, spacing, kind, dense):
    from regedu.fields import bspline_grid_shape, bspline_to_dvf
    from regedu.regularisers import bspline_regulariser

    torch.manual_seed(0)
    c = torch.randn(2, len(shape), *bspline_grid_shape(shape, spacing), dtype=torch.float64, requires_grad=True)
    want = dense(bspline_to_dvf(c, shape, spacing), reduction="none")
    got = bspline_regulariser(c, shape, spacing, kind, reduction="none")
    assert want.shape == got.shape == (2,)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), (got, want)
    (g_want,) = torch.autograd.grad(want.sum(), c)
    (g_got,) = torch.autograd.grad(got.sum(), c)
    assert torch.allclose(g_got, g_want, rtol=1e-8, atol=1e-14)


def test_bspline_regulariser_is_zero_for_an_affine_field_and_checks_its_input():
    from regedu.fields import bspline_grid_shape
    from regedu.regularisers import bspline_regulariser

    grid = bspline_grid_shape((32, 32), 4.0)
    pos = (torch.arange(grid[0], dtype=torch.float32) - 1) * 4.0  # control point positions in voxels
    c = torch.stack([0.3 * pos[:, None].expand(grid) + 20.0, -0.2 * pos[None, :].expand(grid)])[None]  # an affine field
    assert float(bspline_regulariser(c, (32, 32), 4.0, "bending")) < 1e-8
    assert float(bspline_regulariser(c, (32, 32), 4.0, "diffusion")) > 1e-3  # not constant: diffusion sees it
    with pytest.raises(ValueError, match=r"bspline_regulariser: coefficients must have shape \(B, 2, 11, 11\) .* got \(1, 2, 11, 10\)"):
        bspline_regulariser(c[..., :-1], (32, 32), 4.0)
    with pytest.raises(ValueError, match="bspline_regulariser: kind must be one of"):
        bspline_regulariser(c, (32, 32), 4.0, kind="elastic")
