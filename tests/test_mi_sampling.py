"""Voxel sampling in mutual information: an explicit option, deterministic, close to the full measure."""

import math

import pytest
import torch

import regedu
from regedu import similarity as S
from regedu import transforms as T
from regedu.data.brain import load_brain


@pytest.fixture(scope="module")
def brain_pair():
    """The 2 mm T1 template (614k voxels) and a T2-like image of the same anatomy (CSF bright, WM dark)."""
    v = load_brain(2)
    t2 = (v.tissues * torch.tensor([1.0, 0.55, 0.25]).reshape(1, 3, 1, 1, 1)).sum(1, keepdim=True)
    return v.image, t2


def shifted(image, shift):
    return regedu.affine_warp(image, T.translation_matrix([float(shift), 0.0, 0.0]))


def test_default_and_whole_image_subsets_are_the_full_measure():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 1, 20, 24, generator=g), torch.rand(1, 1, 20, 24, generator=g)
    full = regedu.mutual_information(a, b)
    for samples in (1.0, 480, 10_000):
        assert torch.equal(regedu.mutual_information(a, b, samples=samples), full)
    assert not torch.equal(regedu.mutual_information(a, b, samples=0.5), full)


def test_sampled_mi_is_close_to_full_mi_on_a_brain_pair(brain_pair):
    t1, t2 = brain_pair
    full, sampled = [], []
    for shift in (0.0, 2.0, 4.0):
        moved = shifted(t2, shift)
        full.append(regedu.mutual_information(t1, moved).item())
        sampled.append(regedu.mutual_information(t1, moved, samples=0.1).item())
    for f, s in zip(full, sampled):
        assert s == pytest.approx(f, abs=0.02)
    # the ranking that registration relies on is kept, by a clear margin
    assert full[0] > full[1] + 0.2 > full[2] + 0.2
    assert sampled[0] > sampled[1] + 0.2 > sampled[2] + 0.2


def test_sampled_mi_gradient_is_finite_and_agrees_with_full(brain_pair):
    t1, t2 = brain_pair
    grads = {}
    for samples in (None, 0.1):
        shift = torch.tensor([1.5, 0.0, 0.0], requires_grad=True)
        regedu.mutual_information(t1, regedu.affine_warp(t2, T.translation_matrix(shift)), samples=samples).backward()
        assert torch.isfinite(shift.grad).all()
        grads[samples] = shift.grad[0].item()
    # ascending MI moves the shift back towards 0, with or without sampling, at about the same rate
    assert grads[None] < 0 and grads[0.1] < 0
    assert grads[0.1] == pytest.approx(grads[None], rel=0.2)


def test_sampling_is_deterministic_and_seeded(brain_pair):
    t1, t2 = brain_pair
    moved = shifted(t2, 1.0)
    first = regedu.mutual_information(t1, moved, samples=20_000)
    assert torch.equal(regedu.mutual_information(t1, moved, samples=20_000), first)
    other = regedu.mutual_information(t1, moved, samples=20_000, seed=1)
    assert not torch.equal(other, first)
    assert other.item() == pytest.approx(first.item(), abs=0.03)


def test_one_sample_fills_one_parzen_window():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 1, 16, 16, generator=g), torch.rand(1, 1, 16, 16, generator=g)
    p = S.joint_histogram(a, b, bins=16, samples=1)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert 1 <= int((p > 0).sum()) <= 16  # one voxel touches at most 4 x 4 bins
    assert int((S.joint_histogram(a, b, bins=16, samples=64) > 0).sum()) > 16


def test_mask_weights_the_sampled_voxels_and_mi_loss_passes_sampling_on(brain_pair):
    t1, t2 = brain_pair
    moved = shifted(t2, 1.0)
    ones = torch.ones_like(t1)
    plain = regedu.mutual_information(t1, moved, samples=0.05)
    assert regedu.mutual_information(t1, moved, ones, samples=0.05).item() == pytest.approx(plain.item(), abs=1e-6)
    assert S.mi_loss(t1, moved, samples=0.05).item() == pytest.approx(-plain.item(), abs=1e-7)
    brain = (t1 > 0).float()
    inside = regedu.mutual_information(t1, moved, brain, samples=0.2).item()
    assert inside == pytest.approx(regedu.mutual_information(t1, moved, brain).item(), abs=0.03)


def test_sampled_batch_uses_one_subset_for_every_element():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 1, 12, 12, 12, generator=g), torch.rand(2, 1, 12, 12, 12, generator=g)
    both = regedu.mutual_information(a, b, samples=300, reduction="none")
    one = regedu.mutual_information(a[1:], b[1:], samples=300)
    assert both.shape == (2,) and both[1].item() == pytest.approx(one.item(), abs=1e-6)


@pytest.mark.parametrize("samples", [0, -5, 0.0, 1.5, -0.1, True, "many", math.nan, [10]])
def test_bad_samples_are_refused_naming_the_argument(samples):
    a = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="samples"):
        regedu.mutual_information(a, a, samples=samples)


def test_bad_seed_is_refused():
    a = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="seed"):
        regedu.mutual_information(a, a, samples=10, seed=1.5)


def test_register_samples_mi_only_for_matrix_models_on_3d_levels_above_a_million_voxels():
    from regedu.registration import engine

    assert engine._choose_similarity("register", "mi") == (S.mi_loss, "mi")  # deformable models: every voxel
    loss, name = engine._choose_similarity("register", "mi", sample_mi=True)
    assert name == "mi"
    g = torch.Generator().manual_seed(3)
    small_2d = torch.rand(2, 1, 1, 256, 256, generator=g)[:, 0]
    small_3d = torch.rand(2, 1, 1, 24, 24, 24, generator=g)[:, 0]  # 13824 voxels, below MI_SAMPLE_ABOVE
    for a, b in (small_2d, small_3d):
        assert torch.equal(loss(a[None], b[None]), S.mi_loss(a[None], b[None]))
    side = round(engine.MI_SAMPLE_ABOVE ** (1 / 3)) + 1
    a, b = torch.rand(2, 1, 1, side, side, side, generator=g)
    assert torch.equal(loss(a, b), S.mi_loss(a, b, samples=engine.MI_SAMPLES))
    assert not torch.equal(loss(a, b), S.mi_loss(a, b))


def test_register_uses_sampled_mi_with_affine_and_full_mi_with_bspline(monkeypatch):
    from regedu.registration import engine

    v = load_brain(4)  # 40 x 48 x 40
    t2 = (v.tissues * torch.tensor([1.0, 0.55, 0.25]).reshape(1, 3, 1, 1, 1)).sum(1, keepdim=True)
    moving = shifted(t2, 1.5)
    results = {}
    for above in (float("inf"), 10_000):  # every voxel, then sampling on levels above 10^4 voxels
        monkeypatch.setattr(engine, "MI_SAMPLE_ABOVE", above)
        for transform in ("affine", "bspline"):
            r = regedu.register(v.image, moving, transform=transform, similarity="mi", iterations=5, levels=1,
                                progress=False)
            results[transform, above] = r.dvf
    assert not torch.equal(results["affine", 10_000], results["affine", float("inf")])
    assert torch.equal(results["bspline", 10_000], results["bspline", float("inf")])


def test_matrix_models_interpolate_the_moving_image_at_the_samples_only(brain_pair):
    """A matrix model on a large 3D level computes the sampled MI from the moving image interpolated at the
    sampled voxels (no whole warp): the same loss and gradient as mi_loss(fixed, affine_warp(moving, A),
    samples=MI_SAMPLES) wherever the warped image keeps the moving image's intensity range, with a mask and a
    batch of matrices too; and register takes this path (and recovers a known shift)."""
    from regedu.registration import engine

    fixed, t2 = brain_pair
    fixed, t2 = fixed[..., ::2, ::2, ::2].contiguous(), t2[..., ::2, ::2, ::2].contiguous()  # 40 x 48 x 40, above MI_SAMPLE_ABOVE
    mask = (fixed > 0.05).float()
    g = torch.Generator().manual_seed(0)
    # two matrices off the voxel grid (at the identity every sample sits on a voxel, where linear
    # interpolation has a kink and either one-sided derivative is as right as the other)
    A = torch.eye(4).repeat(2, 1, 1)
    A[:, :3, :3] += 0.02 * torch.randn(2, 3, 3, generator=g)
    A[:, :3, 3] += torch.tensor([[0.3, 0.2, -0.4], [1.5, -1.0, 0.5]])
    for m in (None, mask):
        sampled = engine._SampledMatrixMI(fixed, t2, m)
        for i in range(2):
            warped = regedu.affine_warp(t2, A[i:i + 1])
            want = S.mi_loss(fixed, warped, mask=m, samples=engine.MI_SAMPLES)
            # the one difference: the histogram maps the moved intensities with the moving image's range (here
            # [0, 1]), the full path with the warped image's (interpolation lowers the peak a little)
            assert abs(float(sampled(A[i:i + 1])) - float(want)) < 1e-3
            same_range = engine._SampledMatrixMI(fixed, t2, m)
            same_range.low, same_range.high = warped.amin().reshape(1, 1), warped.amax().reshape(1, 1)
            A_s, A_w = A[i:i + 1].clone().requires_grad_(True), A[i:i + 1].clone().requires_grad_(True)
            got = same_range(A_s)
            want = S.mi_loss(fixed, regedu.affine_warp(t2, A_w), mask=m, samples=engine.MI_SAMPLES)
            assert torch.allclose(got, want, atol=1e-6), (float(got), float(want))
            got.backward()
            want.backward()
            assert torch.allclose(A_s.grad[:, :3], A_w.grad[:, :3], atol=1e-4, rtol=1e-3)
        both = sampled(A)  # a batch of matrices: the mean of the two losses
        assert torch.allclose(both, torch.stack([sampled(A[i:i + 1]) for i in range(2)]).mean(), atol=1e-6)
    seen = []
    original = engine.LevelObjective.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.sampled_mi is not None)

    engine.LevelObjective.__init__ = spy
    try:
        r = regedu.register(fixed, shifted(t2, 2.0), transform="translation", similarity="mi", progress=False)
    finally:
        engine.LevelObjective.__init__ = original
    assert seen[-1] is True  # the finest level (40 x 48 x 40) sampled
    assert abs(float(r.matrix[0, 0, 3]) + 2.0) < 0.25  # moving(x) = t2(x + 2): undone by reading 2 voxels back along axis 0
