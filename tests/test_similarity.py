"""Similarity measures, overlap and landmarks: ranges, invariances and rankings."""

import pytest
import torch

import regedu
from regedu import similarity as S
from regedu import transforms as T


def smooth_image(shape=(64, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    img = regedu.filters.gaussian_blur(torch.rand(1, 1, *shape, generator=g), 2.0)
    return (img - img.min()) / (img.max() - img.min())  # intensities in [0, 1], like the course's images


def multimodal_pair():
    """Two 'modalities' of the same anatomy: tissue classes with unrelated, non-monotone intensities."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    r = ((yy - 30) ** 2 + (xx - 34) ** 2).sqrt()
    labels = (r < 26).long() + (r < 16).long() + (((yy - 25) ** 2 + (xx - 40) ** 2).sqrt() < 6).long()
    t1 = torch.tensor([0.0, 0.6, 1.0, 0.3])[labels]
    t2 = torch.tensor([0.0, 0.9, 0.2, 0.7])[labels]
    noise = 0.02 * torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(1))
    return (t1 + noise[0])[None, None], (t2 + noise[1])[None, None]


def test_ssd_mse():
    a, b = smooth_image(seed=0), smooth_image(seed=1)
    assert S.ssd(a, a).item() == 0
    assert S.ssd(a, b).item() == pytest.approx(((a - b) ** 2).sum().item(), rel=1e-5)
    assert S.mse(a, b).item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-5)
    mask = torch.zeros_like(a)
    mask[..., :32, :] = 1
    assert S.mse(a, b, mask).item() == pytest.approx(((a - b)[..., :32, :] ** 2).mean().item(), rel=1e-5)


def test_ncc_invariant_to_positive_affine_intensity_change():
    a, b = smooth_image(seed=0), smooth_image(seed=1)
    assert regedu.ncc(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert regedu.ncc(a, 3.0 * a + 7.0).item() == pytest.approx(1.0, abs=1e-5)
    assert regedu.ncc(a, -a).item() == pytest.approx(-1.0, abs=1e-5)
    assert regedu.ncc(a, 2.0 * b + 1.0).item() == pytest.approx(regedu.ncc(a, b).item(), abs=1e-5)
    assert S.ncc_loss(a, a).item() == pytest.approx(-1.0, abs=1e-5)


def test_lncc_range_invariance_and_constant_regions():
    a, b = smooth_image(seed=0), smooth_image(seed=1)
    assert regedu.lncc(a, a).item() == pytest.approx(1.0, abs=1e-2)
    # invariance to a positive affine intensity change holds wherever the window lies inside the image:
    # everywhere for border="inside"; away from the border (window // 2 = 4 voxels) for the default, whose
    # zero padding (VoxelMorph's and MONAI's definition) is not shifted with the intensities
    assert regedu.lncc(a, 4 * a - 1, border="inside").item() == pytest.approx(regedu.lncc(a, a, border="inside").item(), abs=1e-3)
    interior = torch.zeros_like(a)
    interior[..., 4:-4, 4:-4] = 1
    assert regedu.lncc(a, 4 * a - 1, interior).item() == pytest.approx(regedu.lncc(a, a, interior).item(), abs=1e-3)
    assert 0 <= regedu.lncc(a, b).item() < 0.5
    const = torch.ones(1, 1, 16, 16)
    # a constant region scores 0: the whole image with border="inside"; with the default zero padding the
    # windows that reach over the border see an edge (ones next to padded zeros), so check the interior
    value = regedu.lncc(const, const, border="inside")
    assert torch.isfinite(value) and value.item() == pytest.approx(0.0, abs=1e-6)
    interior = torch.zeros_like(const)
    interior[..., 4:-4, 4:-4] = 1
    value = regedu.lncc(const, const, interior)
    assert torch.isfinite(value) and value.item() == pytest.approx(0.0, abs=1e-6)
    # gradients stay finite on constant regions
    for border in ("zeros", "inside"):
        m = const.clone().requires_grad_(True)
        regedu.lncc(const, m, border=border).backward()
        assert torch.isfinite(m.grad).all()


def _voxelmorph_style_lncc(f, m, window):
    """Local NCC as VoxelMorph's NCC and MONAI's LocalNormalizedCrossCorrelationLoss (rectangular kernel)
    compute it: zero-padded convolution with a box of ones, local sums divided by the full window volume."""
    ndim = f.dim() - 2
    conv = torch.nn.functional.conv2d if ndim == 2 else torch.nn.functional.conv3d
    box = torch.ones((1, 1) + (window,) * ndim, dtype=f.dtype)

    def local_sum(x):
        return conv(x, box, padding=window // 2)

    n = float(window**ndim)
    sf, sm, sff, smm, sfm = (local_sum(x) for x in (f, m, f * f, m * m, f * m))
    mu_f, mu_m = sf / n, sm / n
    cross = sfm - mu_m * sf - mu_f * sm + mu_f * mu_m * n
    var_f = sff - 2 * mu_f * sf + mu_f * mu_f * n
    var_m = smm - 2 * mu_m * sm + mu_m * mu_m * n
    return (cross * cross / (var_f * var_m + 1e-5)).mean()


@pytest.mark.parametrize("shape,window", [((40, 36), 9), ((40, 36), 5), ((14, 16, 12), 5)])
def test_lncc_default_matches_voxelmorph_and_monai_at_the_border(shape, window):
    a = smooth_image(shape, seed=0).double()
    b = smooth_image(shape, seed=1).double()
    b = 0.3 * a + b
    reference = _voxelmorph_style_lncc(a, b, window)
    assert regedu.lncc(a, b, window=window).item() == pytest.approx(reference.item(), abs=1e-10)
    # the in-image variant is a different measure, and the difference sits at the border
    inside = regedu.lncc(a, b, window=window, border="inside")
    assert abs(inside.item() - reference.item()) > 1e-3
    interior = torch.zeros_like(a)
    interior[(..., *[slice(window // 2, -(window // 2))] * len(shape))] = 1
    assert regedu.lncc(a, b, interior, window=window).item() == pytest.approx(
        regedu.lncc(a, b, interior, window=window, border="inside").item(), abs=1e-10)


def test_lncc_is_robust_to_smooth_bias_field():
    a = smooth_image(seed=0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    biased = a * (0.5 + yy + xx)[None, None]
    assert regedu.lncc(a, biased) > regedu.ncc(a, biased) ** 2


def test_mi_ranks_aligned_multimodal_pair_above_misaligned():
    t1, t2 = multimodal_pair()
    shifted = regedu.affine_warp(t2, T.translation_matrix([0.0, 6.0]))
    aligned = regedu.mutual_information(t1, t2)
    misaligned = regedu.mutual_information(t1, shifted)
    assert aligned > misaligned + 0.1
    # SSD prefers the wrong answer here: intensities differ across modalities
    assert 0 <= misaligned.item() and aligned.item() <= torch.log(torch.tensor(32.0)).item()
    p = S.joint_histogram(t1, t2, bins=16)
    assert p.shape == (1, 16, 16) and p.sum().item() == pytest.approx(1.0, abs=1e-5) and (p >= 0).all()
    nmi = regedu.mutual_information(t1, t2, normalised=True)
    assert 1.0 <= nmi.item() <= 2.0


def test_mi_is_differentiable_and_gradient_improves_alignment():
    t1, t2 = multimodal_pair()
    shift = torch.tensor([0.0, 3.0], requires_grad=True)
    moved = regedu.affine_warp(t2, T.translation_matrix(shift))
    regedu.mutual_information(t1, moved, bins=24).backward()
    # ascending MI moves the shift back towards 0
    assert shift.grad[1] < 0


def test_dice_hard_and_soft():
    a = torch.zeros(1, 1, 10, 10, dtype=torch.long)
    b = torch.zeros(1, 1, 10, 10, dtype=torch.long)
    a[..., :5, :] = 1
    b[..., :5, :5] = 1
    b[..., 5:, :] = 2
    per = regedu.dice(a, b, labels=[1, 2], reduction="none")
    assert per.shape == (1, 2)
    assert per[0, 0].item() == pytest.approx(2 * 25 / (50 + 25))
    assert per[0, 1].item() == 0.0
    assert regedu.dice(a, a).item() == 1.0
    soft = regedu.soft_dice(S.one_hot(a, 3), S.one_hot(b, 3), reduction="none")
    assert torch.allclose(soft[0, :2], per[0].float(), atol=1e-4)
    assert regedu.dice_loss(S.one_hot(a, 3), S.one_hot(a, 3)).item() == pytest.approx(0.0, abs=1e-5)


def test_target_registration_error_affine_and_dvf():
    A = T.rigid_matrix(torch.tensor([0.3, 2.0, -1.0]), center=[15.5, 15.5])
    p = torch.tensor([[5.0, 5.0], [20.0, 10.0], [12.0, 25.0]])
    q = T.apply_affine(A, p)
    assert regedu.target_registration_error(p, q, A).item() == pytest.approx(0.0, abs=1e-5)
    assert regedu.target_registration_error(p, q, regedu.affine_to_dvf(A, (32, 32))).item() == pytest.approx(0.0, abs=1e-4)
    ident = regedu.target_registration_error(p, q, torch.eye(3), spacing=(2.0, 2.0)).item()
    assert ident == pytest.approx(2 * (q - p).norm(dim=1).mean().item(), rel=1e-5)


def test_similarities_work_in_3d_and_batches():
    a = regedu.filters.gaussian_blur(torch.rand(2, 1, 12, 14, 16), 1.5)
    b = regedu.filters.gaussian_blur(torch.rand(2, 1, 12, 14, 16), 1.5)
    for f in (regedu.ncc, regedu.lncc, regedu.mutual_information, regedu.mse):
        per = f(a, b, reduction="none")
        assert per.shape == (2,)
        assert f(a, b).item() == pytest.approx(per.mean().item(), rel=1e-5)
    assert regedu.ncc(a, a).item() == pytest.approx(1.0, abs=1e-5)


def test_get_loss_names_and_callables():
    a, b = smooth_image(seed=0), smooth_image(seed=1)
    assert S.get_loss("ncc")(a, b).item() == pytest.approx(-regedu.ncc(a, b).item())
    assert S.get_loss("mi")(a, b).item() == pytest.approx(-regedu.mutual_information(a, b).item())
    custom = lambda f, m, mask=None: (f - m).abs().mean()  # noqa: E731
    assert S.get_loss(custom) is custom


def test_lncc_reuses_the_fixed_statistics_only_for_the_same_unchanged_image():
    # the fixed image's local statistics are kept for the next call; any change to the image must be seen
    g = torch.Generator().manual_seed(0)
    f, m = torch.rand(1, 1, 20, 18, generator=g), torch.rand(1, 1, 20, 18, generator=g)
    first = regedu.lncc(f, m)
    assert torch.equal(regedu.lncc(f, m), first)
    assert torch.allclose(regedu.lncc(f.clone(), m), first)
    f.mul_(0.5).add_(torch.rand(1, 1, 20, 18, generator=g))  # in place: same storage, new version
    fresh = f.clone()
    assert torch.equal(regedu.lncc(f, m), regedu.lncc(fresh, m)) and not torch.allclose(regedu.lncc(f, m), first)
    assert not torch.allclose(regedu.lncc(f, m, window=5), regedu.lncc(f, m))  # the window is part of the key
    assert not torch.allclose(regedu.lncc(f, m, border="inside"), regedu.lncc(f, m))
    # a fixed image that needs a gradient gets one (nothing cached)
    fg = f.clone().requires_grad_(True)
    regedu.lncc(fg, m).backward()
    assert fg.grad is not None and bool(torch.isfinite(fg.grad).all()) and float(fg.grad.abs().sum()) > 0
