"""The real scans that ship offline inside installed packages, and the independent tissue segmentation."""

import numpy as np
import pytest
import torch

from regedu.data import real


def test_every_listed_scan_exists_in_its_package():
    import importlib.util
    from pathlib import Path
    for name, (package, rel, licence) in real.REAL_SCANS.items():
        root = Path(importlib.util.find_spec(package).origin).parent
        assert (root / rel).is_file(), name
        assert licence


def test_t1_slice_and_its_segmentation():
    v = real.load_t1_slice()
    assert v.shape == (256, 256) and v.image.dtype == torch.float32
    assert 0.0 <= float(v.image.min()) and float(v.image.max()) == 1.0
    assert sorted(torch.unique(v.labels).tolist()) == [0, 1, 2, 3]
    img = v.image[0, 0]
    means = [float(img[v.labels[0, 0] == k].mean()) for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # T1: CSF < GM < WM
    # the brain is about 140 mm wide at 1 mm: a real adult brain (the assumed spacing is plausible)
    cols = (v.labels[0, 0] > 0).any(0).nonzero()
    assert 120 <= int(cols.max() - cols.min()) <= 170


@pytest.mark.parametrize("loader, shape, spacing", [
    (real.load_b0_slab, (128, 128, 10), (2.0, 2.0)),
    (real.load_b0_volume, (58, 58, 24), (4.0, 4.0, 5.0)),
    (real.load_epi, (128, 96, 24), (2.0, 2.0, 2.2)),
])
def test_nifti_scans_load_with_world_geometry(loader, shape, spacing):
    v = loader()
    assert v.shape == shape and v.ndim == 3
    assert v.spacing[: len(spacing)] == pytest.approx(spacing, abs=1e-3)
    assert float(v.image.max()) == 1.0 and torch.isfinite(v.image).all()
    frac = float(v.mask.mean())
    assert 0.1 < frac < 0.8  # a brain mask, neither empty nor the whole field of view


def test_b0_volume_t2_segmentation_is_t2_ordered():
    v = real.load_b0_volume()
    seg = real.tissue_segmentation(v.image, v.labels, contrast="t2")
    img = v.image[0, 0]
    means = [float(img[seg[0, 0] == k].mean()) for k in (1, 2, 3)]
    assert means[0] > means[1] > means[2]  # T2: CSF brightest, WM darkest
    assert bool((seg[v.labels == 0] == 0).all())


def test_gmm_recovers_known_mixture():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 4, size=(1, 1, 40, 40))
    centres = np.array([0.0, 0.2, 0.5, 0.8])
    image = torch.from_numpy(centres[truth] + 0.03 * rng.standard_normal(truth.shape)).float()
    seg = real.tissue_segmentation(image, torch.ones_like(image), "t1")
    assert float((seg.numpy() == truth).mean()) > 0.99


def test_segmentation_and_mask_errors():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="tissue_segmentation: contrast must be 't1' or 't2'"):
        real.tissue_segmentation(x, torch.ones_like(x), contrast="flair")
    with pytest.raises(ValueError, match="tissue_segmentation: the mask holds 0 voxels"):
        real.tissue_segmentation(x, torch.zeros_like(x))
    with pytest.raises(ValueError, match="image and mask must both be"):
        real.tissue_segmentation(x, torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="brain_mask: nothing above the threshold"):
        real.brain_mask(torch.zeros(1, 1, 8, 8), threshold=0.5)
