"""Initialisation (regedu.registration.initialisation): centre of mass, principal axes, exhaustive search."""

import math

import pytest
import torch

import regedu
from regedu import transforms as T
from regedu.registration.initialisation import centre_of_mass, exhaustive_search, moments_initialisation, principal_axes


def _bar(shape=(64, 64)):
    """An elongated, asymmetric object (a bar with a knob at one end): principal axes are well defined."""
    img = torch.zeros(1, 1, *shape)
    if len(shape) == 2:
        img[..., 20:44, 26:36] = 1.0
        img[..., 20:26, 36:42] = 1.0
    else:
        img[..., 10:22, 12:36, 18:26] = 1.0
        img[..., 10:22, 12:18, 26:30] = 1.0
    return img


def _corners(shape):
    import itertools
    return torch.tensor(list(itertools.product(*[(0.0, s - 1.0) for s in shape])))


def test_centre_of_mass_of_a_known_square_and_3d():
    img = torch.zeros(2, 1, 20, 30)
    img[0, :, 2:6, 10:14] = 1.0          # centre (3.5, 11.5)
    img[1, :, 10, 4] = 2.0               # a single voxel
    assert torch.allclose(centre_of_mass(img), torch.tensor([[3.5, 11.5], [10.0, 4.0]]))
    vol = torch.zeros(1, 1, 8, 9, 10)
    vol[..., 1:4, 2:4, 5:9] = 1.0
    assert torch.allclose(centre_of_mass(vol), torch.tensor([[2.0, 2.5, 6.5]]))


def test_principal_axes_of_an_elongated_object():
    img = torch.zeros(1, 1, 40, 40)
    img[..., 5:35, 18:22] = 1.0          # long along rows (axis 0)
    c, axes, var = principal_axes(img)
    assert torch.allclose(c, torch.tensor([[19.5, 19.5]]))
    assert abs(axes[0, 0, 0].item()) == pytest.approx(1.0, abs=1e-5), "the first axis is the long one (rows)"
    assert var[0, 0] > 10 * var[0, 1]


@pytest.mark.parametrize("shape", [(64, 64), (32, 48, 40)])
def test_centre_of_mass_initialisation_recovers_a_known_translation(shape):
    fixed = _bar(shape)
    t = torch.tensor([5.0, -3.0] if len(shape) == 2 else [3.0, -4.0, 2.0])
    A = T.translation_matrix(t)
    moving = regedu.affine_warp(fixed, T.invert_affine(A), padding_mode="zeros")   # moving(A x) = fixed(x)
    init = moments_initialisation(fixed, moving, rotation=False)
    assert init.shape == (1, len(shape) + 1, len(shape) + 1)
    assert torch.allclose(init[0], A, atol=1e-4)


@pytest.mark.parametrize("angle", [0.6, 2.4, -2.0])
def test_principal_axes_initialisation_recovers_a_large_rotation(angle):
    fixed = _bar()
    A = T.rigid_matrix(torch.tensor([angle, 4.0, -2.0]), center=T.image_center((64, 64)))
    moving = regedu.affine_warp(fixed, T.invert_affine(A), padding_mode="zeros")
    init = moments_initialisation(fixed, moving)
    corners = _corners((64, 64))
    err = regedu.target_registration_error(corners, T.apply_affine(A, corners), init).item()
    com_only = regedu.target_registration_error(corners, T.apply_affine(A, corners), moments_initialisation(fixed, moving, rotation=False)).item()
    assert err < 2.0 and com_only > 10 * err
    # every named similarity, with a mask, picks the same (right) orientation
    for similarity in ("mse", "ncc", "lncc", "mi", "ssd"):
        other = moments_initialisation(fixed, moving, similarity=similarity, mask=torch.ones(1, 1, 64, 64))
        assert torch.allclose(other, init, atol=1e-5), similarity


def test_exhaustive_search_finds_the_rotation_and_helps_register():
    fixed = _bar()
    A = T.rigid_matrix(torch.tensor([2.5, 3.0, 5.0]), center=T.image_center((64, 64)))
    moving = regedu.affine_warp(fixed, T.invert_affine(A), padding_mode="zeros")
    angles = torch.linspace(-math.pi, math.pi, 25)[:-1]                            # every 15 degrees
    best, losses = exhaustive_search(fixed, moving, angles, similarity="mse")
    assert losses.shape == (24, 1)
    found = math.atan2(best[0, 1, 0].item(), best[0, 0, 0].item())
    assert abs(math.remainder(found - 2.5, 2 * math.pi)) <= math.radians(7.5) + 1e-6
    corners = _corners((64, 64))
    plain = regedu.register(fixed, moving, transform="rigid", progress=False)
    started = regedu.register(fixed, moving, transform="rigid", init=best, progress=False)

    def err(r):
        return regedu.target_registration_error(corners, T.apply_affine(A, corners), r.matrix).item()

    assert err(started) < 1.0 and err(plain) > 10


def test_exhaustive_search_with_translations_and_a_callable_similarity():
    fixed = _bar()
    moving = regedu.affine_warp(fixed, T.translation_matrix(torch.tensor([0.0, 0.0])))
    calls = []

    def loss(f, m, mask=None):
        calls.append(1)
        return regedu.mse(f, m)

    best, losses = exhaustive_search(fixed, moving, [0.0, 0.5], translations=[[0.0, 0.0], [4.0, 0.0], [0.0, -4.0]],
                                     similarity=loss, size=None)
    assert losses.shape == (2, 3) and len(calls) == 6
    assert torch.allclose(best[0], torch.eye(3), atol=1e-5)


def test_bad_inputs_are_reported_clearly():
    img = _bar()
    with pytest.raises(ValueError, match="no positive intensity"):
        centre_of_mass(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="image must be a 4D or 5D tensor"):
        centre_of_mass(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="batch size 1"):
        moments_initialisation(img.repeat(2, 1, 1, 1), img)
    with pytest.raises(ValueError, match="same number of spatial dimensions"):
        moments_initialisation(img, _bar((16, 16, 16)))
    with pytest.raises(ValueError, match="similarity must be one of"):
        moments_initialisation(img, img, similarity="cosine")
    with pytest.raises(ValueError, match="same spatial size"):
        exhaustive_search(img, _bar((48, 64)), [0.0])
    with pytest.raises(ValueError, match=r"translations must have shape \(T, 2\)"):
        exhaustive_search(img, img, [0.0], translations=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"angles must be \(K, 3\)"):
        exhaustive_search(_bar((16, 16, 16)), _bar((16, 16, 16)), [0.0, 1.0])
    with pytest.raises(ValueError, match="size must be an integer >= 8"):
        exhaustive_search(img, img, [0.0], size=2)
    with pytest.raises(ValueError, match="at least one angle"):
        exhaustive_search(img, img, [])
