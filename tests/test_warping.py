"""Warping (regedu.warping) and resampling (regedu.resampling): pull-back convention, agreement with
affine warping, gradients, resizing."""

import pytest
import torch

import regedu
from regedu import transforms as T

from regedu.utils import available_devices


@pytest.mark.parametrize("shape", [(17, 23), (7, 9, 11)])
def test_zero_dvf_is_identity(shape):
    img = torch.rand(2, 3, *shape)
    dvf = torch.zeros(2, len(shape), *shape)
    assert torch.allclose(regedu.warp(img, dvf), img, atol=1e-5)
    assert torch.equal(regedu.warp(img, dvf, mode="nearest"), img)


def test_pull_back_convention_integer_shift():
    """moved(x) = moving(x + u(x)): a displacement of +2 along axis 0 samples two rows further down."""
    img = torch.rand(1, 1, 12, 10)
    dvf = torch.zeros(1, 2, 12, 10)
    dvf[:, 0] = 2.0
    moved = regedu.warp(img, dvf)
    assert torch.allclose(moved[..., :-2, :], img[..., 2:, :], atol=1e-5)
    dvf = torch.zeros(1, 2, 12, 10)
    dvf[:, 1] = -3.0  # channel 1 = axis 1 (columns)
    moved = regedu.warp(img, dvf)
    assert torch.allclose(moved[..., 3:], img[..., :-3], atol=1e-5)


@pytest.mark.parametrize("shape", [(24, 30), (10, 12, 14)])
def test_affine_dvf_warps_like_affine_warp(shape):
    ndim = len(shape)
    params = torch.tensor([0.3, 1.1, 0.9, 0.1, 1.5, -2.0]) if ndim == 2 else torch.tensor(
        [0.1, -0.2, 0.15, 1.05, 0.95, 1.1, 0.05, -0.05, 0.0, 1.0, 0.5, -1.0])
    A = T.affine_matrix(params, center=[(s - 1) / 2 for s in shape])
    img = torch.rand(1, 2, *shape)
    a = regedu.affine_warp(img, A)
    b = regedu.warp(img, regedu.affine_to_dvf(A, shape))
    assert torch.allclose(a, b, atol=1e-5)


def test_rotation_by_90_degrees_matches_rot90():
    img = torch.rand(1, 1, 33, 33)
    A = T.rigid_matrix(torch.tensor([torch.pi / 2, 0.0, 0.0]), center=[16.0, 16.0])
    assert torch.allclose(regedu.affine_warp(img, A), torch.rot90(img, -1, dims=(-2, -1)), atol=1e-5)
    dvf = regedu.affine_to_dvf(A, (33, 33))
    assert torch.allclose(regedu.warp(img, dvf), torch.rot90(img, -1, dims=(-2, -1)), atol=1e-5)
    assert torch.equal(regedu.warp(img, dvf, mode="nearest"), torch.rot90(img, -1, dims=(-2, -1)))


def test_warp_of_labels_keeps_label_values():
    labels = torch.randint(0, 4, (1, 1, 20, 20))
    dvf = regedu.random_dvf((20, 20), 3.0, 4.0, seed=1)
    moved = regedu.warp(labels, dvf, mode="nearest")
    assert moved.dtype == labels.dtype
    assert set(moved.unique().tolist()) <= {0, 1, 2, 3}
    moved_lin = regedu.warp_labels(labels, dvf, mode="linear", num_classes=4)
    assert moved_lin.dtype == labels.dtype and set(moved_lin.unique().tolist()) <= {0, 1, 2, 3}


def test_padding_modes():
    img = torch.ones(1, 1, 8, 8)
    dvf = torch.full((1, 2, 8, 8), 100.0)  # everything outside
    assert torch.allclose(regedu.warp(img, dvf, padding_mode="zeros"), torch.zeros_like(img))
    assert torch.allclose(regedu.warp(img, dvf, padding_mode="border"), img)


def test_batch_broadcast_of_image():
    img = torch.rand(1, 1, 16, 16)
    dvf = regedu.random_dvf((16, 16), 2.0, 3.0, batch=3, seed=0)
    out = regedu.warp(img, dvf)
    assert out.shape == (3, 1, 16, 16)
    assert torch.allclose(out[1], regedu.warp(img, dvf[1:2])[0])


@pytest.mark.parametrize("ndim", [2, 3])
def test_gradcheck_through_warp(ndim):
    shape = (5, 6) if ndim == 2 else (4, 5, 3)
    img = torch.rand(1, 1, *shape, dtype=torch.float64, requires_grad=True)
    # keep sample points away from voxel boundaries where linear interpolation has kinks
    dvf = (0.3 + 0.4 * torch.rand(1, ndim, *shape, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda i, u: regedu.warp(i, u), (img, dvf), eps=1e-6, atol=1e-5)


def test_affine_warp_gradient_reaches_matrix():
    img = torch.rand(1, 1, 16, 16)
    p = torch.tensor([0.1, 1.0, 1.0, 0.0, 0.5, 0.5], requires_grad=True)
    regedu.affine_warp(img, T.affine_matrix(p, center=[7.5, 7.5])).sum().backward()
    assert p.grad.abs().sum() > 0


def test_resize_dvf_rescales_values():
    """A translation of 3 voxels on a 33-grid is 6 voxels on a 65-grid covering the same field of view."""
    dvf = torch.zeros(1, 2, 33, 17)
    dvf[:, 0] = 3.0
    dvf[:, 1] = 1.0
    up = regedu.resize_dvf(dvf, (65, 33))
    assert torch.allclose(up[:, 0], torch.full((1, 65, 33), 6.0))
    assert torch.allclose(up[:, 1], torch.full((1, 65, 33), 2.0))


def test_resize_dvf_keeps_the_physical_deformation():
    """Warping a downsampled image with a downsampled DVF equals downsampling the warped image."""
    A = T.affine_matrix(torch.tensor([0.2, 1.0, 1.0, 0.0, 2.0, -2.0]), center=[32.0, 32.0])
    fine = regedu.affine_to_dvf(A, (65, 65))
    coarse = regedu.resize_dvf(fine, (33, 33))
    A_coarse = T.scaling_matrix([0.5, 0.5]) @ A @ T.scaling_matrix([2.0, 2.0])
    assert torch.allclose(coarse, regedu.affine_to_dvf(A_coarse, (33, 33)), atol=1e-4)


def test_resize_and_pyramid_shapes():
    img = torch.rand(1, 1, 64, 48)
    pyr = regedu.image_pyramid(img, 3)
    assert [p.shape[2:] for p in pyr] == [torch.Size([17, 13]), torch.Size([33, 25]), torch.Size([64, 48])]
    assert pyr[-1] is img
    # one rule for "the same field of view on a coarser grid": resize(scale=0.5) agrees with the pyramid
    assert regedu.resize(img, scale=0.5).shape[2:] == pyr[1].shape[2:] == regedu.coarse_shape((64, 48), 2) == (33, 25)
    lab = torch.randint(0, 3, (1, 1, 64, 48))
    small = regedu.resize(lab, shape=(32, 24), mode="nearest")
    assert small.dtype == lab.dtype and set(small.unique().tolist()) <= {0, 1, 2}


ACCELERATORS = [d for d in available_devices() if d != "cpu"]


@pytest.mark.gpu
@pytest.mark.parametrize("device", ACCELERATORS or [pytest.param("none", marks=pytest.mark.skip(
    reason="no CUDA or MPS device here: the CPU-vs-accelerator comparison cannot run"))])
def test_same_result_on_every_device(device):
    img = torch.rand(1, 1, 20, 24)
    dvf = regedu.random_dvf((20, 24), 3.0, 4.0, seed=3)
    ref = regedu.warp(img, dvf)
    out = regedu.warp(img.to(device), dvf.to(device))
    assert out.device.type == device
    assert torch.allclose(out.cpu(), ref, atol=1e-4)
    det = regedu.jacobian_determinant(dvf.to(device)).cpu()
    assert torch.allclose(det, regedu.jacobian_determinant(dvf), atol=1e-4)


@pytest.mark.parametrize("shape", [(12, 10), (6, 7, 5), (120, 100), (24, 23, 20)], ids=["2d-small", "3d-small", "2d", "3d"])
def test_warp_gradients_survive_later_warps_and_match_grid_sample(shape):
    """Both gradient paths (plain torch operations below SMALL_WARP_VOXELS, the custom autograd node above,
    which keeps the grid in 2D and uses the thread's scratch buffer in 3D): the gradients match a bare
    grid_sample, and gradients already returned never change afterwards (in 3D the backward pass hands out
    the scratch buffer as the DVF gradient and takes aten's grid gradient as the next buffer)."""
    import torch.nn.functional as F
    from regedu.warping import dvf_to_grid

    ndim = len(shape)
    g = torch.Generator().manual_seed(4)
    img = torch.rand(1, 2, *shape, generator=g)
    u1, u2 = (2 * torch.rand(1, ndim, *shape, generator=g) - 1 for _ in range(2))

    def reference(u):
        u = u.clone().requires_grad_(True)
        F.grid_sample(img, dvf_to_grid(u), mode="bilinear", padding_mode="border", align_corners=True).pow(2).sum().backward()
        return u.grad

    # non-leaf fields (as from a network), whose gradients a hook keeps: the very tensors the warp returned
    leaf_a, leaf_b = u1.clone().requires_grad_(True), u2.clone().requires_grad_(True)
    a, b = leaf_a * 1, leaf_b * 1
    grads = []
    a.register_hook(grads.append)
    b.register_hook(grads.append)
    (regedu.warp(img, a).pow(2).sum() + regedu.warp(img, b).pow(2).sum()).backward()  # two warps, one graph
    assert len(grads) == 2 and grads[0].data_ptr() != grads[1].data_ptr()
    kept = [gr.clone() for gr in grads]
    for _ in range(3):  # later calls reuse the scratch buffer, forward and backward
        c = u2.clone().requires_grad_(True)
        regedu.warp(img, c).sum().backward()
        with torch.no_grad():
            regedu.warp(img, u1)
    assert all(torch.equal(gr, k) for gr, k in zip(grads, kept))
    assert torch.allclose(leaf_a.grad, reference(u1), atol=1e-5) and torch.allclose(leaf_b.grad, reference(u2), atol=1e-5)


@pytest.mark.parametrize("shape", [(120, 100), (24, 23, 20)], ids=["2d", "3d"])
def test_second_derivatives_of_the_warp_node_raise_a_clear_error(shape):
    """The custom warp node gives first derivatives only: a gradient taken with create_graph=True is correct,
    and differentiating it again raises (never a silently wrong second derivative)."""
    g = torch.Generator().manual_seed(5)
    img = torch.rand(1, 1, *shape, generator=g)
    u = (2 * torch.rand(1, len(shape), *shape, generator=g) - 1).requires_grad_(True)
    (first,) = torch.autograd.grad(regedu.warp(img, u).pow(2).sum(), u, create_graph=True)
    u_plain = u.detach().clone().requires_grad_(True)
    regedu.warp(img, u_plain).pow(2).sum().backward()
    assert torch.allclose(first.detach(), u_plain.grad)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        first.sum().backward()
