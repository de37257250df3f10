"""Point-based registration (regedu.registration.points): closed form, FRE/TRE theory, bad input."""

import math

import pytest
import torch

import regedu
from regedu import transforms as T
from regedu.registration.points import expected_fre, expected_tre, fiducial_registration_error, fit_points, target_errors

D = torch.float64


def _points(n, ndim, seed, scale=50.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, ndim, generator=g, dtype=D) * scale


@pytest.mark.parametrize("ndim", [2, 3])
def test_kabsch_recovers_a_known_rigid_transform_exactly(ndim):
    params = torch.tensor([0.4, 3.0, -7.0] if ndim == 2 else [0.3, -0.2, 0.5, 3.0, 4.0, -5.0], dtype=D)
    A = T.rigid_matrix(params, center=torch.full((ndim,), 20.0, dtype=D))
    p = _points(6, ndim, seed=1)
    q = T.apply_affine(A, p)
    for model in ("rigid", "similarity", "affine"):
        B = fit_points(p, q, model=model)
        assert B.shape == (ndim + 1, ndim + 1)
        assert torch.allclose(B, A, atol=1e-10), model
        assert fiducial_registration_error(p, q, B) < 1e-10


def test_fixed_to_moving_convention_aligns_images():
    # landmarks picked in both images give the matrix that affine_warp needs to align moving to fixed
    fixed = torch.zeros(1, 1, 48, 48, dtype=D)
    fixed[..., 12:30, 16:26] = 1.0
    A = T.rigid_matrix(torch.tensor([0.3, 2.0, -1.0], dtype=D), center=T.image_center((48, 48)).to(D))
    moving = regedu.affine_warp(fixed, T.invert_affine(A), padding_mode="zeros")     # moving(A x) = fixed(x)
    p = torch.tensor([[12.0, 16], [12, 25], [29, 16], [29, 25]], dtype=D)           # corners of the bar in fixed
    q = T.apply_affine(A, p)                                                         # the same corners in moving
    B = fit_points(p, q)
    aligned = regedu.affine_warp(moving, B, padding_mode="zeros")
    inside = torch.zeros_like(fixed, dtype=torch.bool)
    inside[..., 14:28, 18:24] = True
    assert torch.allclose(aligned[inside], fixed[inside], atol=1e-6)


def test_similarity_and_affine_models():
    p = _points(8, 2, seed=2)
    S = T.translation_matrix(torch.tensor([1.0, 2.0], dtype=D)) @ T.rotation_matrix_2d(torch.tensor(0.7, dtype=D)) \
        @ T.scaling_matrix(torch.tensor([1.3, 1.3], dtype=D))
    q = T.apply_affine(S, p)
    assert torch.allclose(fit_points(p, q, "similarity"), S, atol=1e-10)
    # a rigid fit cannot represent the scale: a clearly non-zero residual, and a proper rotation
    R = fit_points(p, q, "rigid")
    assert fiducial_registration_error(p, q, R) > 1.0
    assert torch.allclose(R[:2, :2] @ R[:2, :2].T, torch.eye(2, dtype=D), atol=1e-10)
    Af = T.affine_matrix(torch.tensor([0.2, 1.1, 0.8, 0.3, 4.0, -2.0], dtype=D))
    assert torch.allclose(fit_points(p, T.apply_affine(Af, p), "affine"), Af, atol=1e-10)


@pytest.mark.parametrize("ndim", [2, 3])
def test_reflection_handling(ndim):
    p = _points(7, ndim, seed=3)
    mirror = torch.eye(ndim + 1, dtype=D)
    mirror[0, 0] = -1.0
    q = T.apply_affine(mirror, p)
    proper = fit_points(p, q)
    assert torch.linalg.det(proper[:ndim, :ndim]) == pytest.approx(1.0, abs=1e-10), "default: always a rotation"
    assert fiducial_registration_error(p, q, proper) > 1.0, "a rotation cannot fit a mirror image"
    refl = fit_points(p, q, allow_reflection=True)
    assert torch.linalg.det(refl[:ndim, :ndim]) == pytest.approx(-1.0, abs=1e-10)
    assert torch.allclose(refl, mirror, atol=1e-10)


def test_anisotropic_spacing_fit_is_rigid_in_mm():
    spacing = (4.0, 1.5, 1.5)
    S = torch.diag(torch.tensor([*spacing, 1.0], dtype=D))
    R_mm = T.rigid_matrix(torch.tensor([0.3, 0.1, -0.2, 5.0, 2.0, -3.0], dtype=D))
    A_vox = torch.linalg.inv(S) @ R_mm @ S                 # a world rotation, written in voxel indices
    p = _points(6, 3, seed=4)
    q = T.apply_affine(A_vox, p)
    B = fit_points(p, q, spacing=spacing)
    assert torch.allclose(B, A_vox, atol=1e-9)
    assert fiducial_registration_error(p, q, B, spacing=spacing) < 1e-9
    # ignoring the spacing: the best rotation of voxel indices does not fit
    assert fiducial_registration_error(p, q, fit_points(p, q), spacing=spacing) > 0.5


@pytest.mark.parametrize("ndim", [2, 3])
def test_fre_and_tre_match_fitzpatrick_theory(ndim):
    # Monte Carlo: random isotropic FLE; the RMS FRE and TRE agree with the predicted values
    g = torch.Generator().manual_seed(5)
    fid = torch.tensor([[10.0, 10], [10, 50], [50, 30], [35, 5]], dtype=D) if ndim == 2 else _points(5, 3, seed=6, scale=40)
    targets = (torch.tensor([[30.0, 30], [120, 100]], dtype=D) if ndim == 2
               else torch.tensor([[20.0, 20, 20], [110, 0, 60]], dtype=D))
    A = T.rigid_matrix(torch.tensor([0.4, 2.0, 3.0] if ndim == 2 else [0.3, -0.2, 0.5, 3.0, 4.0, -5.0], dtype=D))
    fle, trials = 2.0, 3000
    fre2, tre2 = torch.zeros(()), torch.zeros(len(targets), dtype=D)
    for _ in range(trials):
        noisy = T.apply_affine(A, fid) + torch.randn(fid.shape, generator=g, dtype=D) * fle / math.sqrt(ndim)
        B = fit_points(fid, noisy)
        fre2 = fre2 + fiducial_registration_error(fid, noisy, B) ** 2 / trials
        tre2 = tre2 + target_errors(targets, T.apply_affine(A, targets), B) ** 2 / trials
    assert fre2.sqrt().item() == pytest.approx(expected_fre(fle, len(fid), ndim), rel=0.05)
    predicted = expected_tre(fid, targets, fle)
    assert torch.allclose(tre2.sqrt(), predicted, rtol=0.08)
    # FRE is the same for every target, TRE grows away from the fiducials' centroid
    assert predicted[1] > 2 * predicted[0]
    assert expected_fre(fle, len(fid), ndim) < fle


def test_spread_out_fiducials_give_smaller_tre():
    target = torch.tensor([[60.0, 60.0]], dtype=D)
    clustered = torch.tensor([[55.0, 55], [55, 65], [65, 60]], dtype=D) - 40
    spread = torch.tensor([[10.0, 10], [10, 110], [110, 60]], dtype=D)
    assert expected_tre(spread, target, 1.0) < 0.5 * expected_tre(clustered, target, 1.0)


@pytest.mark.parametrize("points,model,match", [
    (torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]), "rigid", "2 distinct points"),
    (torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]), "affine", "not all on one line"),
    (torch.tensor([[0.0, 0, 0], [1, 1, 1], [2, 2, 2], [5, 5, 5]]), "rigid", "not all on one line"),
    (torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]), "affine", "not all on one plane"),
    (torch.tensor([[0.0, 0, 0], [1, 0, 0]]), "rigid", "at least 3 points"),
])
def test_degenerate_configurations_raise(points, model, match):
    with pytest.raises(ValueError, match="degenerate") as info:
        fit_points(points, points + 1.0, model=model)
    assert match in str(info.value)


def test_bad_inputs_name_the_argument():
    p = torch.rand(5, 2)
    with pytest.raises(ValueError, match="moving_points.*same shape"):
        fit_points(p, torch.rand(4, 2))
    with pytest.raises(ValueError, match=r"fixed_points must have shape \(N, 2\) or \(N, 3\)"):
        fit_points(torch.rand(5), torch.rand(5))
    with pytest.raises(TypeError, match="fixed_points must be a torch.Tensor"):
        fit_points([[0, 0], [1, 1]], p)
    with pytest.raises(ValueError, match="model must be one of"):
        fit_points(p, p, model="projective")
    with pytest.raises(ValueError, match="spacing must be 2 positive numbers"):
        fit_points(p, p, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="NaN"):
        fit_points(torch.full((5, 2), float("nan")), p)
    with pytest.raises(ValueError, match=r"transform must be \(3, 3\)"):
        fiducial_registration_error(p, p, torch.eye(4))
    with pytest.raises(ValueError, match="fle must be >= 0"):
        expected_tre(p, p, -1.0)
