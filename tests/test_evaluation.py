"""The evaluation card (regedu.evaluation) against independent reference computations and known distances."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from regedu import evaluation as ev
from regedu.warping import affine_to_dvf


def _disc(shape, centre, radius):
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


def _t(mask, label=1):
    return torch.from_numpy(mask.astype(np.int64) * label)[None, None]


def _reference_hd(a, b, spacing, q):
    """Brute force: surface voxels (a voxel with a face neighbour outside, padding outside), all pairwise distances."""
    def surface(m):
        p = np.pad(m, 1)
        inner = np.ones_like(m)
        for ax in range(m.ndim):
            for s in (-1, 1):
                inner &= np.roll(p, s, axis=ax)[tuple(slice(1, -1) for _ in range(m.ndim))]
        return np.argwhere(m & ~inner) * np.asarray(spacing)
    d = cdist(surface(a), surface(b))
    return max(np.percentile(d.min(1), q), np.percentile(d.min(0), q))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (2.0, 0.5), (1.0, 3.0, 1.5)])
def test_hd95_matches_brute_force_on_random_blobs(spacing):
    rng = np.random.default_rng(len(spacing) + int(spacing[0] * 10))
    shape = (20, 22) if len(spacing) == 2 else (12, 14, 10)
    from scipy import ndimage as ndi
    a = ndi.gaussian_filter(rng.random(shape), 2) > 0.5
    b = ndi.gaussian_filter(rng.random(shape), 2) > 0.5
    for q in (95.0, 100.0):
        got = ev.hausdorff95(_t(a), _t(b), 1, spacing, percentile=q)
        assert got == pytest.approx(_reference_hd(a, b, spacing, q), rel=1e-9, abs=1e-9)


def test_hd_of_a_shifted_square_is_the_shift_in_mm():
    a = np.zeros((30, 30), bool)
    a[5:15, 5:15] = True
    b = np.roll(a, 3, axis=0)
    assert ev.hausdorff95(_t(a), _t(b), spacing=(2.5, 1.0), percentile=100) == pytest.approx(7.5)
    assert ev.hausdorff95(_t(a), _t(b), spacing=(1.0, 2.5), percentile=100) == pytest.approx(3.0)


def test_hd95_of_concentric_discs_is_the_radius_difference():
    a, b = _disc((64, 64), (32, 32), 10), _disc((64, 64), (32, 32), 16)
    hd = ev.hausdorff95(_t(a), _t(b), spacing=(0.5, 0.5))
    assert abs(hd - 3.0) <= 0.5  # 6 voxels of 0.5 mm, up to the discretisation of the circles
    assert ev.hausdorff95(_t(a), _t(a)) == 0.0


def test_hd95_missing_labels():
    a = np.zeros((8, 8), bool)
    a[2:4, 2:4] = True
    assert math.isnan(ev.hausdorff95(_t(a), _t(np.zeros_like(a))))
    assert ev.hausdorff95(_t(a), _t(a), label=7) == 0.0
    with pytest.raises(ValueError, match="spacing must be 2 positive voxel sizes"):
        ev.hausdorff95(_t(a), _t(a), spacing=(1.0, 1.0, 1.0))


def test_sdlogj_zero_for_affine_and_matches_numpy_reference():
    A = torch.tensor([[1.1, 0.1, 0.5], [0.0, 0.9, -1.0], [0, 0, 1]], dtype=torch.float64)
    assert ev.sdlogj(affine_to_dvf(A, (16, 16))) == pytest.approx(0.0, abs=1e-10)
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.interpolate(torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64), size=(24, 24),
                                        mode="bicubic", align_corners=True)
    un = u[0].numpy()
    d0, d1 = np.gradient(un[0]), np.gradient(un[1])
    det = (1 + d0[0]) * (1 + d1[1]) - d0[1] * d1[0]
    ref = np.log(np.clip(det, 1e-9, 1e9)).std()
    assert ev.sdlogj(u) == pytest.approx(ref, rel=1e-9)


def test_folding_and_tre_in_mm():
    u = torch.zeros(1, 2, 10, 10)
    u[0, 0, 4] = 3.0  # row 4 jumps past rows 5-6: det J < 0 at rows 5 and 3 (central differences)
    card = ev.evaluate(u)
    assert card.folding == pytest.approx(float((1 + torch.gradient(u[0, 0], dim=0)[0] <= 0).double().mean()))
    assert card.folding > 0
    t = torch.zeros(1, 2, 8, 8)
    t[0, 0], t[0, 1] = 1.0, 2.0
    p = torch.tensor([[2.0, 2.0], [4.0, 3.0]])
    card = ev.evaluate(t, fixed_points=p, moving_points=p + torch.tensor([1.0, 2.0]), spacing=(2.0, 3.0))
    assert card.tre == pytest.approx(0.0, abs=1e-6) and card.tre_before == pytest.approx(math.hypot(2.0, 6.0))
    assert card.sdlogj == pytest.approx(0.0, abs=1e-12) and card.folding == 0.0


def test_inverse_consistency():
    t = torch.zeros(1, 3, 6, 6, 6, dtype=torch.float64)
    t[:, 0] = 1.5
    assert ev.inverse_consistency(t, -t) == pytest.approx(0.0, abs=1e-12)
    assert ev.inverse_consistency(t, t, spacing=(2.0, 1.0, 1.0)) == pytest.approx(6.0)
    card = ev.evaluate(t, inverse=-t)
    assert card.inverse_consistency == pytest.approx(0.0, abs=1e-12)


def test_card_dice_per_label_and_table():
    lab = torch.zeros(1, 1, 20, 20, dtype=torch.int64)
    lab[0, 0, 2:10, 2:10] = 1
    lab[0, 0, 12:18, 12:18] = 2
    shift = torch.zeros(1, 2, 20, 20)
    shift[0, 1] = -1.0  # moved(x) = moving(x - e1): content moves one column right
    card = ev.evaluate(shift, lab, lab, spacing=(1.0, 2.0), label_names={1: "A", 2: "B"})
    assert card.dice == pytest.approx({1: 2 * 56 / 128, 2: 2 * 30 / 72})
    assert card.dice_mean == pytest.approx((2 * 56 / 128 + 2 * 30 / 72) / 2)
    assert card.hd95[1] == pytest.approx(2.0) and card.hd95[2] == pytest.approx(2.0)
    text = str(card)
    assert "Dice A" in text and "HD95 B (mm)" in text and "SDlogJ" in text
    same = ev.evaluate(torch.zeros(1, 2, 20, 20), lab, lab)
    assert same.dice_mean == 1.0 and same.hd95_mean == 0.0 and same.as_dict()["tre"] is None


def test_measure_time_and_memory():
    m = ev.measure(lambda n: torch.ones(n), 50_000_000)
    assert m.value.numel() == 50_000_000 and m.seconds > 0 and m.cpu_seconds >= 0
    assert m.peak_mb > 100  # 200 MB of float32 were written
    card = ev.evaluate(torch.zeros(1, 2, 4, 4), measurement=m)
    assert card.seconds == m.seconds and card.peak_mb == m.peak_mb


def test_evaluate_errors():
    with pytest.raises(ValueError, match="evaluate: give both fixed_labels and moving_labels"):
        ev.evaluate(torch.zeros(1, 2, 4, 4), fixed_labels=torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="evaluate: dvf must hold one registration"):
        ev.evaluate(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="evaluate: fixed_labels and dvf must have the same spatial size"):
        ev.evaluate(torch.zeros(1, 2, 4, 4), torch.ones(1, 1, 5, 5, dtype=torch.int64), torch.ones(1, 1, 5, 5, dtype=torch.int64))
