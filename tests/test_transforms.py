"""Transforms: matrices, parameter round trips, theta conversion."""

import math

import pytest
import torch
import torch.nn.functional as F

from regedu import transforms as T


def test_rotation_2d_matches_lecture_matrix():
    R = T.rotation_matrix_2d(0.3)
    c, s = math.cos(0.3), math.sin(0.3)
    assert torch.allclose(R[:2, :2], torch.tensor([[c, -s], [s, c]]))
    assert torch.allclose(R[2], torch.tensor([0.0, 0.0, 1.0]))


def test_rotation_is_orthonormal_3d_and_batched():
    angles = torch.tensor([[0.1, -0.4, 0.7], [1.0, 0.2, -0.3]])
    R = T.rotation_matrix_3d(angles)
    assert R.shape == (2, 4, 4)
    eye = torch.eye(3).expand(2, 3, 3)
    assert torch.allclose(R[:, :3, :3] @ R[:, :3, :3].transpose(1, 2), eye, atol=1e-6)
    assert torch.allclose(torch.linalg.det(R[:, :3, :3]), torch.ones(2), atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_3d_rotations_are_right_handed_about_every_axis_like_scipy(axis):
    """One handedness on all three axes: tensor axes (0, 1, 2) play SciPy's (x, y, z)."""
    from scipy.spatial.transform import Rotation

    angles = [0.0, 0.0, 0.0]
    angles[axis] = 0.4
    R = T.rotation_matrix_3d(torch.tensor(angles, dtype=torch.float64))[:3, :3].numpy()
    rotvec = [0.0, 0.0, 0.0]
    rotvec[axis] = 0.4
    assert abs(R - Rotation.from_rotvec(rotvec).as_matrix()).max() < 1e-12
    # right-hand rule: a quarter turn about axis k takes axis k+1 to axis k+2 (cyclically)
    quarter = [0.0, 0.0, 0.0]
    quarter[axis] = math.pi / 2
    Q = T.rotation_matrix_3d(torch.tensor(quarter, dtype=torch.float64))[:3, :3]
    e = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(Q @ e[(axis + 1) % 3], e[(axis + 2) % 3], atol=1e-12)


def test_3d_euler_angles_match_scipy_extrinsic_xyz_and_round_trip():
    from scipy.spatial.transform import Rotation

    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        angles = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * 2.4  # |a1| < pi/2
        R = T.rotation_matrix_3d(angles)[:3, :3].numpy()
        assert abs(R - Rotation.from_euler("xyz", angles.numpy()).as_matrix()).max() < 1e-12
        params = torch.cat([angles, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)])
        assert torch.allclose(T.rigid_params(T.rigid_matrix(params)), params, atol=1e-10)


def test_compose_and_invert():
    A = T.affine_matrix(torch.tensor([0.2, 1.1, 0.9, 0.1, 3.0, -2.0]))
    B = T.rigid_matrix(torch.tensor([-0.5, 1.0, 4.0]))
    AB = T.compose_affines(A, B)
    p = torch.tensor([[3.0, 7.0], [10.0, -2.0]])
    # the last matrix acts first
    assert torch.allclose(T.apply_affine(AB, p), T.apply_affine(A, T.apply_affine(B, p)), atol=1e-5)
    assert torch.allclose(T.compose_affines(A, T.invert_affine(A)), torch.eye(3), atol=1e-6)


def test_translation_scaling_shear_act_on_points():
    p = torch.tensor([[2.0, 3.0]])
    assert torch.allclose(T.apply_affine(T.translation_matrix([1.0, -1.0]), p), torch.tensor([[3.0, 2.0]]))
    assert torch.allclose(T.apply_affine(T.scaling_matrix([2.0, 0.5]), p), torch.tensor([[4.0, 1.5]]))
    # lecture's shear H = [[1, hx], [hy, 1]]
    assert torch.allclose(T.apply_affine(T.shear_matrix([0.5, 0.0]), p), torch.tensor([[3.5, 3.0]]))


@pytest.mark.parametrize("ndim", [2, 3])
def test_rigid_params_round_trip(ndim):
    params = torch.tensor([0.3, 2.0, -1.5]) if ndim == 2 else torch.tensor([0.2, -0.3, 0.4, 1.0, 2.0, -3.0])
    center = [10.0] * ndim
    A = T.rigid_matrix(params, center=center)
    assert torch.allclose(T.rigid_params(A, center=center), params, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_affine_params_round_trip(ndim):
    if ndim == 2:
        params = torch.tensor([0.3, 1.2, 0.8, 0.15, 2.0, -1.0])
    else:
        params = torch.tensor([0.1, -0.2, 0.3, 1.1, 0.9, 1.05, 0.1, -0.1, 0.05, 1.0, 2.0, 3.0])
    center = [7.5] * ndim
    A = T.affine_matrix(params, center=center)
    assert torch.allclose(T.affine_params(A, center=center), params, atol=1e-5)


def test_affine_identity_params_give_identity():
    assert torch.allclose(T.affine_matrix(torch.tensor([0.0, 1, 1, 0, 0, 0])), torch.eye(3))


def test_rotation_about_center_fixes_center():
    c = torch.tensor([12.0, 5.0])
    A = T.rigid_matrix(torch.tensor([0.7, 0.0, 0.0]), center=c)
    assert torch.allclose(T.apply_affine(A, c[None]), c[None], atol=1e-5)


@pytest.mark.parametrize("shape,moving_shape", [((20, 30), None), ((20, 30), (40, 25)), ((8, 10, 12), None)])
def test_theta_round_trip_and_matches_affine_grid(shape, moving_shape):
    ndim = len(shape)
    params = torch.tensor([0.2, 1.1, 0.9, 0.1, 1.0, -2.0]) if ndim == 2 else torch.tensor(
        [0.1, 0.2, -0.1, 1.0, 1.1, 0.9, 0.05, 0.0, -0.05, 1.0, -1.0, 0.5])
    A = T.affine_matrix(params, center=[(s - 1) / 2 for s in shape]).double()
    theta = T.affine_to_theta(A, shape, moving_shape)
    assert theta.shape == (1, ndim, ndim + 1)
    assert torch.allclose(T.theta_to_affine(theta, shape, moving_shape)[0], A, atol=1e-9)
    # the grid that PyTorch builds from theta, converted back to voxels, is A applied to the voxel grid
    grid = F.affine_grid(theta, [1, 1, *shape], align_corners=True)[0]  # (*shape, ndim), x/y(/z) order
    ms = moving_shape or shape
    vox = torch.stack([(grid[..., ndim - 1 - k] + 1) * (ms[k] - 1) / 2 for k in range(ndim)], -1)
    pts = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij"), -1)
    assert torch.allclose(vox, T.apply_affine(A, pts.reshape(-1, ndim)).reshape(vox.shape), atol=1e-9)


def test_gradients_flow_through_params():
    p = torch.tensor([0.1, 1.0, 1.0, 0.0, 0.5, 0.5], requires_grad=True)
    T.affine_matrix(p, center=[5.0, 5.0]).sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: T.affine_matrix(torch.zeros(5)), r"affine_matrix: params must have 6 entries \(2D\) or 12 entries \(3D\).*got shape \(5,\)"),
        (lambda: T.rigid_matrix(torch.zeros(4)), r"rigid_matrix: params must have 3 entries \(2D\) or 6 entries \(3D\)"),
        (lambda: T.invert_affine(torch.eye(5)), r"invert_affine: A must be a homogeneous affine matrix.*got shape \(5, 5\)"),
        (lambda: T.apply_affine(torch.eye(3), torch.zeros(4, 3)), r"apply_affine: points must have 2 coordinates"),
        (lambda: T.apply_affine([[1, 0], [0, 1]], torch.zeros(1, 2)), r"apply_affine: A must be a torch.Tensor, got list"),
        (lambda: T.compose_affines(torch.eye(3), torch.eye(4)), r"compose_affines: matrices\[1\] is \(4, 4\) but matrices\[0\] is \(3, 3\)"),
        (lambda: T.affine_to_theta(torch.eye(4), (10, 10)), r"affine_to_theta: A must be \(3, 3\) for 2D images, got shape \(4, 4\)"),
        (lambda: T.affine_params(T.scaling_matrix([-1.0, 1.0])), r"positive determinant"),
    ],
)
def test_errors_are_clear(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
