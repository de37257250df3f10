"""Displacement fields: Jacobians, folding, composition, integration, inversion, DOF."""

import math

import pytest
import torch

import regedu
from regedu import transforms as T


@pytest.mark.parametrize("shape", [(20, 24), (10, 12, 14)])
def test_jacobian_of_affine_field_is_det_A(shape):
    ndim = len(shape)
    params = torch.tensor([0.3, 1.2, 0.8, 0.1, 1.0, 2.0]) if ndim == 2 else torch.tensor(
        [0.1, 0.2, -0.3, 1.1, 0.9, 1.2, 0.1, 0.0, -0.1, 1.0, 2.0, 3.0])
    A = T.affine_matrix(params.double(), center=[5.0] * ndim)
    det = regedu.jacobian_determinant(regedu.affine_to_dvf(A, shape))
    assert det.shape == (1, *shape)
    assert torch.allclose(det, torch.linalg.det(A[:ndim, :ndim]).expand_as(det), atol=1e-9)


def test_folding_fraction_counts_non_positive_determinants():
    # a reflection along axis 1 folds everywhere; identity folds nowhere
    A = T.scaling_matrix([1.0, -1.0])
    assert regedu.folding_fraction(regedu.affine_to_dvf(A, (8, 8))).item() == 1.0
    assert regedu.folding_fraction(torch.zeros(1, 2, 8, 8)).item() == 0.0
    dvf = regedu.random_dvf((40, 40), max_displacement=8.0, smoothness=2.0, seed=0)
    det = regedu.jacobian_determinant(dvf)
    assert regedu.folding_fraction(dvf).item() == pytest.approx((det <= 0).float().mean().item())
    assert 0 < regedu.folding_fraction(dvf).item() < 1


def test_random_dvf_properties():
    a = regedu.random_dvf((32, 40), max_displacement=5.0, smoothness=6.0, batch=2, seed=7)
    b = regedu.random_dvf((32, 40), max_displacement=5.0, smoothness=6.0, batch=2, seed=7)
    c = regedu.random_dvf((32, 40), max_displacement=5.0, smoothness=6.0, batch=2, seed=8)
    assert a.shape == (2, 2, 32, 40)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(regedu.fields.magnitude(a).flatten(1).amax(1), torch.full((2,), 5.0))
    # smoother fields have smaller gradients for the same amplitude
    rough = regedu.random_dvf((32, 40), 5.0, 2.0, seed=7)
    assert regedu.diffusion(a[:1]) < regedu.diffusion(rough)


def test_bspline_field_interpolates_constant_and_linear_coefficients():
    shape, spacing = (33, 25), 8
    grid = regedu.fields.bspline_grid_shape(shape, spacing)
    coef = torch.full((1, 2, *grid), 2.5)
    assert torch.allclose(regedu.bspline_to_dvf(coef, shape, spacing), torch.full((1, 2, *shape), 2.5), atol=1e-6)
    # cubic B-splines reproduce linear functions: control point c at (c-1)*spacing
    pos = (torch.arange(grid[0], dtype=torch.float64) - 1) * spacing
    coef = pos.reshape(1, 1, -1, 1).expand(1, 2, grid[0], grid[1]).clone()
    dvf = regedu.bspline_to_dvf(coef, shape, spacing)
    assert torch.allclose(dvf[0, 0, :, 0], torch.arange(33, dtype=torch.float64), atol=1e-9)
    b = regedu.random_bspline_dvf((32, 32, 32), spacing=8, max_displacement=3.0, seed=1)
    assert b.shape == (1, 3, 32, 32, 32)
    assert regedu.fields.magnitude(b).max().item() == pytest.approx(3.0, rel=1e-4)


@pytest.mark.parametrize("ndim", [2, 3])
def test_integrating_constant_velocity_gives_translation(ndim):
    shape = (16,) * ndim
    t = torch.tensor([1.5, -2.0, 0.75][:ndim])
    v = t.reshape(1, ndim, *([1] * ndim)).expand(1, ndim, *shape).clone()
    u = regedu.integrate_velocity(v, steps=7)
    assert torch.allclose(u, v, atol=1e-5)


def test_scaling_and_squaring_is_diffeomorphic():
    v = regedu.random_dvf((64, 64), max_displacement=12.0, smoothness=6.0, seed=2)
    assert regedu.folding_fraction(v).item() > 0  # used directly as a displacement it folds
    u = regedu.integrate_velocity(v, steps=8)
    assert regedu.folding_fraction(u).item() == 0.0
    # exp(v) composed with exp(-v) is close to the identity
    w = regedu.compose(u, regedu.integrate_velocity(-v, steps=8))
    assert w[..., 8:-8, 8:-8].abs().max() < 0.5


def test_compose_matches_sequential_warps():
    img = regedu.filters.gaussian_blur(torch.rand(1, 1, 48, 48), 2.0)
    u = regedu.random_dvf((48, 48), 3.0, 8.0, seed=0)
    v = regedu.random_dvf((48, 48), 3.0, 8.0, seed=1)
    two_steps = regedu.warp(regedu.warp(img, u), v)
    one_step = regedu.warp(img, regedu.compose(u, v))
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    assert (two_steps - one_step)[inner].abs().max() < 0.02


def test_compose_of_affine_fields_is_matrix_product():
    A = T.rigid_matrix(torch.tensor([0.2, 1.0, -1.0]), center=[15.5, 15.5]).double()
    B = T.affine_matrix(torch.tensor([-0.1, 1.05, 0.95, 0.05, 0.5, 0.5]), center=[15.5, 15.5]).double()
    w = regedu.compose(regedu.affine_to_dvf(A, (32, 32)), regedu.affine_to_dvf(B, (32, 32)))
    # warping by A then by B = sampling at A(B(x)): the field of A @ B (inside, away from the border padding)
    ref = regedu.affine_to_dvf(A @ B, (32, 32))
    assert torch.allclose(w[..., 4:-4, 4:-4], ref[..., 4:-4, 4:-4], atol=1e-6)


@pytest.mark.parametrize("ndim", [2, 3])
def test_compose_with_approximate_inverse_is_near_zero(ndim):
    shape = (48, 48) if ndim == 2 else (24, 24, 24)
    u = regedu.random_dvf(shape, max_displacement=3.0, smoothness=6.0 if ndim == 2 else 4.0, seed=4)
    inv = regedu.invert_dvf(u, iterations=30)
    residual = regedu.compose(u, inv)
    inner = (slice(None), slice(None)) + (slice(4, -4),) * ndim
    assert residual[inner].abs().max() < 0.05
    assert regedu.compose(inv, u)[inner].abs().max() < 0.1


def test_dof_of_lecture_mri():
    """The lecture's 3D MRI: 1.5 x 1.5 x 4 mm voxels; e.g. a 240 x 240 x 160 mm field of view."""
    shape = (round(240 / 1.5), round(240 / 1.5), round(160 / 4))
    assert regedu.dof(shape) == 3 * 160 * 160 * 40
    assert regedu.dof(torch.zeros(2, 2, 10, 20)) == 2 * 10 * 20
    assert regedu.dof(shape) == 3 * math.prod(shape)


def test_endpoint_error_masked():
    a = torch.zeros(1, 2, 4, 4)
    b = torch.zeros(1, 2, 4, 4)
    b[:, 0, :2] = 3.0  # error 3 in the top half
    assert regedu.endpoint_error(a, b).item() == pytest.approx(1.5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    assert regedu.endpoint_error(a, b, mask).item() == pytest.approx(3.0)


def test_random_dvf_is_not_concentrated_at_the_border():
    """The field's statistics do not depend on the position: the interior moves as much as the border."""
    m = regedu.fields.magnitude(regedu.random_dvf((128, 128), 5.0, 8.0, batch=4, seed=0))
    border = torch.cat([m[:, :16].flatten(), m[:, -16:].flatten(), m[:, :, :16].flatten(), m[:, :, -16:].flatten()])
    interior = m[:, 32:-32, 32:-32].flatten()
    assert interior.mean() > 0.6 * border.mean()
    assert interior.max() > 0.5 * 5.0


def test_det_j_above_one_shrinks_the_moved_anatomy():
    """jacobian_determinant's docstring: det J belongs to phi (fixed -> moving); where det J > 1 the moved
    image shows the anatomy shrunk by 1 / det J (pull-back warping)."""
    from regedu import transforms as T

    n = 65
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    disk = (((yy - 32) ** 2 + (xx - 32) ** 2) < 12.0**2).double()[None, None]
    A = T.about_center(T.scaling_matrix(torch.tensor([1.5, 1.5], dtype=torch.float64)), [32.0, 32.0])
    u = regedu.affine_to_dvf(A, (n, n))
    det = regedu.jacobian_determinant(u)
    assert torch.allclose(det, torch.full_like(det, 2.25))
    moved = regedu.warp(disk, u)
    assert moved.sum().item() == pytest.approx(disk.sum().item() / 2.25, rel=0.03)
