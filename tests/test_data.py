"""Tests of regedu.data: the brain template, slices, head MRI, shapes, synthetic subjects and pairs,
the T2-like contrast and digits. NIfTI I/O is tested in test_data_nifti.py.

Every test runs offline: conftest.py makes any attempt to open a non-loopback connection fail
(tests/test_offline_guard.py checks the guard itself).
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

import regedu
from regedu import data
from regedu.data import brain as brain_module


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path):
    """No writes to the user's cache folder (the network guard is in conftest.py, for every test)."""
    monkeypatch.setenv("REGEDU_CACHE", str(tmp_path / "cache"))
    yield


# ----------------------------------------------------------------------------- brain template
@pytest.mark.parametrize("resolution, shape", [(1, (160, 192, 160)), (2, (80, 96, 80)), (4, (40, 48, 40))])
def test_load_brain_shapes_spacing_types(resolution, shape):
    v = data.load_brain(resolution)
    assert v.image.shape == (1, 1, *shape) and v.labels.shape == (1, 1, *shape)
    assert v.image.dtype == torch.float32 and v.labels.dtype == torch.int64
    assert v.affine.shape == (4, 4) and v.affine.dtype == torch.float64
    assert v.spacing == (float(resolution),) * 3
    assert torch.allclose(v.affine[:3, :3], torch.eye(3, dtype=torch.float64) * resolution)
    assert 0.0 <= float(v.image.min()) and float(v.image.max()) <= 1.0 and float(v.image.max()) > 0.8
    assert sorted(torch.unique(v.labels).tolist()) == [0, 1, 2, 3]
    assert v.tissues.shape == (1, 3, *shape)
    # probabilities sum to 1 inside the brain and 0 outside
    total = v.tissues.sum(1, keepdim=True)
    assert torch.allclose(total[v.labels > 0], torch.ones(1), atol=1e-4)
    assert float(total[v.labels == 0].abs().max()) < 1e-6


def _original(name):
    import nibabel as nib

    img = nib.load(str(data.template_dir() / brain_module.TEMPLATE_FILES[name]))
    return np.asarray(img.dataobj).astype(np.float64), img.affine


def test_affine_matches_original_file_at_1_and_2_mm():
    t1, A0 = _original("t1")
    v1 = data.load_brain(1)
    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randint(20, s - 20, (50,), generator=g) for s in v1.shape], 1)
    world = data.voxel_to_world(idx.double(), v1.affine)
    orig = data.world_to_voxel(world, A0).round().long().numpy()
    expected = t1[orig[:, 0], orig[:, 1], orig[:, 2]] / 255.0
    got = v1.image[0, 0][idx[:, 0], idx[:, 1], idx[:, 2]].double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # a 2 mm voxel is the mean of the 2x2x2 block of 1 mm voxels around its (world) centre
    v2 = data.load_brain(2)
    idx2 = idx // 2
    centre = data.world_to_voxel(data.voxel_to_world(idx2.double(), v2.affine), A0).numpy()
    lo = np.floor(centre).astype(int)
    assert np.allclose(centre - lo, 0.5)  # the centre lies between 1 mm voxels
    block = np.stack([t1[lo[:, 0] + a, lo[:, 1] + b, lo[:, 2] + c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    got2 = v2.image[0, 0][idx2[:, 0], idx2[:, 1], idx2[:, 2]].double().numpy()
    np.testing.assert_allclose(got2, block.mean(0) / 255.0, atol=1e-5)


def test_labels_follow_the_tissue_maps():
    gm, A0 = _original("gm")
    wm, _ = _original("wm")
    v = data.load_brain(1)
    g = torch.Generator().manual_seed(1)
    inside = torch.nonzero(v.labels[0, 0] > 0)
    pick = inside[torch.randint(0, len(inside), (300,), generator=g)]
    orig = data.world_to_voxel(data.voxel_to_world(pick.double(), v.affine), A0).round().long().numpy()
    pg, pw = gm[orig[:, 0], orig[:, 1], orig[:, 2]] / 255, wm[orig[:, 0], orig[:, 1], orig[:, 2]] / 255
    pc = np.clip(1 - pg - pw, 0, 1)
    expected = np.argmax(np.stack([pc, pg, pw]), 0) + 1
    got = v.labels[0, 0][pick[:, 0], pick[:, 1], pick[:, 2]].numpy()
    assert (got == expected).mean() > 0.99


@pytest.mark.parametrize("resolution", [1, 2, 4])
def test_label_fractions_plausible_and_brain_inside_head(resolution):
    v = data.load_brain(resolution)
    brain = v.labels > 0
    frac = {k: float((v.labels == k).sum() / brain.sum()) for k in (1, 2, 3)}
    assert 0.03 < frac[1] < 0.25, frac  # CSF: ventricles and sulci
    assert 0.40 < frac[2] < 0.70, frac  # grey matter
    assert 0.20 < frac[3] < 0.45, frac  # white matter
    # a plausible brain volume (MNI space is about 10% larger than an average brain): 1.4 to 2.2 litres
    litres = float(brain.sum()) * resolution**3 / 1e6
    assert 1.4 < litres < 2.2
    # inside the head (non-zero T1) and away from the crop border
    head = v.image > 0
    assert float((brain & head).sum() / brain.sum()) > 0.999
    for axis in range(3):
        assert int(brain.select(2 + axis, 0).sum()) == 0 and int(brain.select(2 + axis, -1).sum()) == 0
    # the T1 contrast: CSF darker than grey matter, darker than white matter
    means = [float(v.image[v.labels == k].mean()) for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]


def test_load_brain_is_cached_and_returns_copies():
    a = data.load_brain(4)
    a.image.zero_()
    b = data.load_brain(4)
    assert float(b.image.max()) > 0.5  # the cache was not modified through the copy


def test_load_brain_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REGEDU_CACHE", str(tmp_path / "c"))
    saved = brain_module._CACHE.pop(4, None)
    try:
        a = data.load_brain(4)
        assert (tmp_path / "c" / "mni152_2009a_4mm_v2.npz").is_file()
        brain_module._CACHE.pop(4)
        b = data.load_brain(4)  # from disk
        assert torch.equal(a.image, b.image) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.affine, b.affine) and a.spacing == b.spacing
        # an unusable cache location (a file, not a folder) falls back gracefully
        blocker = tmp_path / "not_a_folder"
        blocker.write_text("x")
        monkeypatch.setenv("REGEDU_CACHE", str(blocker))
        brain_module._CACHE.pop(4)
        c = data.load_brain(4)
        assert torch.equal(a.labels, c.labels)
    finally:
        if saved is not None:
            brain_module._CACHE[4] = saved


def test_load_brain_bad_resolution():
    with pytest.raises(ValueError, match="load_brain: resolution must be one of 1, 2, 4"):
        data.load_brain(3)


def test_load_brain_size_fits_whole_crop():
    v = data.load_brain(4, size=32)
    assert v.shape == (32, 32, 32)
    assert abs(v.spacing[0] - 4 * 47 / 31) < 1e-9  # the longest axis (48 voxels) fits exactly
    # world coordinates of the centre are unchanged
    c_old = data.voxel_to_world(torch.tensor([19.5, 23.5, 19.5]), data.load_brain(4).affine)
    c_new = data.voxel_to_world(torch.tensor([15.5, 15.5, 15.5]), v.affine)
    assert torch.allclose(c_old, c_new)


# ----------------------------------------------------------------------------- slices
@pytest.mark.parametrize("plane, shape", [("axial", (96, 80)), ("coronal", (80, 80)), ("sagittal", (80, 96))])
def test_brain_slice_shapes_and_world_coordinates(plane, shape):
    vol = data.load_brain(2)
    s = data.brain_slice(plane, resolution=2)
    assert s.image.shape == (1, 1, *shape) and s.labels.shape == (1, 1, *shape) and s.spacing == (2.0, 2.0)
    assert sorted(torch.unique(s.labels).tolist()) == [0, 1, 2, 3]
    # every pixel sits at the world position of the volume voxel it was cut from
    g = torch.Generator().manual_seed(2)
    pix = torch.stack([torch.randint(0, n, (40,), generator=g) for n in shape], 1)
    vox = data.world_to_voxel(data.voxel_to_world(pix.double(), s.affine), vol.affine)
    assert torch.allclose(vox, vox.round(), atol=1e-9)
    vox = vox.round().long()
    assert torch.equal(s.image[0, 0][pix[:, 0], pix[:, 1]], vol.image[0, 0][vox[:, 0], vox[:, 1], vox[:, 2]])
    assert torch.equal(s.labels[0, 0][pix[:, 0], pix[:, 1]], vol.labels[0, 0][vox[:, 0], vox[:, 1], vox[:, 2]])


def test_brain_slice_display_orientation():
    s = data.brain_slice("axial")
    up = data.voxel_to_world(torch.tensor([0.0, 0.0]), s.affine)
    down = data.voxel_to_world(torch.tensor([10.0, 0.0]), s.affine)
    right = data.voxel_to_world(torch.tensor([0.0, 10.0]), s.affine)
    assert up[1] > down[1]  # rows run from anterior (top) to posterior
    assert right[0] > up[0]  # columns run from the subject's left to right
    c = data.brain_slice("coronal")
    top, lower = (data.voxel_to_world(torch.tensor([r, 0.0]), c.affine) for r in (0.0, 10.0))
    assert top[2] > lower[2]  # coronal rows run from superior (top) to inferior


def test_brain_slice_index_and_size():
    a = data.brain_slice("axial", index=10)
    b = data.brain_slice("axial", index=-70)
    assert torch.equal(a.image, b.image)
    assert not torch.equal(a.image, data.brain_slice("axial").image)
    s = data.brain_slice("axial", size=(128, 128))
    assert s.image.shape == (1, 1, 128, 128) and s.spacing[0] == pytest.approx(s.spacing[1])
    assert s.spacing[0] == pytest.approx(2 * 95 / 127)
    # the labels agree with the 2 mm slice sampled at the same world positions
    ref = data.brain_slice("axial")
    g = torch.Generator().manual_seed(3)
    pix = torch.randint(0, 128, (200, 2), generator=g)
    w = data.voxel_to_world(pix.double(), s.affine)
    q = data.world_to_voxel(w, ref.affine)[:, :2].round().long()
    ok = (q >= 0).all(1) & (q[:, 0] < 96) & (q[:, 1] < 80)
    agree = s.labels[0, 0][pix[ok, 0], pix[ok, 1]] == ref.labels[0, 0][q[ok, 0], q[ok, 1]]
    assert agree.float().mean() > 0.9
    assert int(s.labels[0, 0][pix[~ok, 0], pix[~ok, 1]].sum()) == 0  # outside: padded background
    p = data.brain_slice("coronal", size=96)
    assert p.image.shape == (1, 1, 96, 96)


def test_brain_slice_errors():
    with pytest.raises(ValueError, match="brain_slice: plane must be one of 'axial', 'coronal', 'sagittal'"):
        data.brain_slice("transverse")
    with pytest.raises(ValueError, match=r"brain_slice: index must be an integer in \[-80, 79\]"):
        data.brain_slice("axial", index=80)


def test_fit_volume_pad_is_exact():
    s = data.brain_slice("axial")
    p = data.fit_volume(s, (100, 84), mode="pad")
    assert torch.equal(p.image[..., 2:98, 2:82], s.image) and float(p.image[..., :2, :].abs().sum()) == 0
    assert p.spacing == s.spacing
    w = data.voxel_to_world(torch.tensor([2.0, 2.0]), p.affine)
    assert torch.allclose(w, data.voxel_to_world(torch.tensor([0.0, 0.0]), s.affine))


# ----------------------------------------------------------------------------- head MRI and shapes
def test_load_head_mri():
    x = data.load_head_mri()
    assert x.shape == (1, 1, 256, 256) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    fg = float((x > 0.1).float().mean())
    assert 0.2 < fg < 0.8  # a head, with background around it
    x.zero_()
    assert float(data.load_head_mri().max()) == 1.0  # cached copy not modified


def test_make_shape_exact_labels():
    img, lab = data.make_shape("circle", size=64, radius=20)
    assert img.shape == lab.shape == (1, 1, 64, 64) and lab.dtype == torch.int64
    assert torch.equal(img, lab.float())
    assert abs(int(lab.sum()) - np.pi * 400) < 0.03 * np.pi * 400
    _, sq = data.make_shape("square", size=(40, 50), radius=10)
    assert int(sq.sum()) == 21 * 21 or int(sq.sum()) == 20 * 20  # the pixels within +-10 of the centre
    _, c = data.make_shape("c", size=64)
    _, ring = data.make_shape("circle", size=64)
    assert 0.3 * int(ring.sum()) < int(c.sum()) < 0.65 * int(ring.sum())  # a ring with an opening, not a disc
    assert int(c[0, 0, 31:33, 45:55].sum()) == 0  # the opening on the right
    assert int(c[0, 0, 31:33, 9:19].sum()) > 0  # the ring on the left
    smooth, lab2 = data.make_shape("circle", smooth=2.0, noise=0.1, seed=1)
    assert torch.equal(lab2, ring) and not torch.equal(smooth, ring.float())
    assert torch.equal(smooth, data.make_shape("circle", smooth=2.0, noise=0.1, seed=1)[0])
    with pytest.raises(ValueError, match="make_shape: kind must be one of 'circle', 'square', 'c'"):
        data.make_shape("star")


# ----------------------------------------------------------------------------- synthetic subjects
def test_synthetic_subject_deterministic_and_exact_dvf():
    vol = data.load_brain(4)
    a = data.synthetic_subject(vol, seed=5)
    b = data.synthetic_subject(vol, seed=5)
    c = data.synthetic_subject(vol, seed=6)
    for k in ("image", "labels", "dvf"):
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["dvf"], c["dvf"]) and not torch.equal(a["image"], c["image"])
    assert a["image"].shape == vol.image.shape and a["dvf"].shape == (1, 3, *vol.shape)
    assert a["labels"].dtype == torch.int64 and 0 <= float(a["image"].min()) and float(a["image"].max()) <= 1
    # the labels are the template's warped by the dvf, and without intensity changes so is the image
    assert torch.equal(a["labels"], regedu.warp(vol.labels, a["dvf"], mode="nearest"))
    clean = data.synthetic_subject(vol, seed=5, gamma=0, bias=0, noise=0)
    assert torch.allclose(clean["image"], regedu.warp(vol.image, clean["dvf"]).clamp(0, 1), atol=1e-6)
    # a diffeomorphism: no folding, and a visible deformation
    assert float(regedu.folding_fraction(a["dvf"])) == 0.0
    assert float(regedu.fields.magnitude(a["dvf"]).max()) > 1.0
    assert torch.equal(a["mask"], (a["labels"] > 0).float())


def test_synthetic_subject_affine_and_models_2d():
    s = data.brain_slice("axial", resolution=4)
    x = data.synthetic_subject(s, seed=1, affine=1.0, model="bspline", gamma=0, bias=0, noise=0)
    assert x["affine"].shape == (3, 3) and not torch.allclose(x["affine"], torch.eye(3, dtype=torch.float64))
    assert float(regedu.folding_fraction(x["dvf"])) == 0.0
    assert torch.allclose(x["image"], regedu.warp(s.image, x["dvf"]).clamp(0, 1), atol=1e-6)
    y = data.synthetic_subject(s, seed=1, model="svf")
    assert not torch.allclose(x["dvf"], y["dvf"])
    with pytest.raises(ValueError, match="synthetic_subject: model must be one of 'svf', 'bspline'"):
        data.synthetic_subject(s, seed=1, model="demons")
    with pytest.raises(TypeError, match="synthetic_subject: source must be a regedu.data.Volume"):
        data.synthetic_subject(s.image, seed=1)


# ----------------------------------------------------------------------------- pairs
def _dice(a, b):
    return float(regedu.dice(a[None], b[None]))


def test_pair_dataset_2d_items_and_ground_truth():
    ds = data.PairDataset("brain", mode="train", size=8, ndim=2, seed=0, max_displacement=6.0)
    it = ds[0]
    assert set(it) == {"fixed", "moving", "dvf", "fixed_labels", "moving_labels", "mask"}
    assert it["fixed"].shape == it["moving"].shape == (1, 96, 80) and it["dvf"].shape == (2, 96, 80)
    assert it["fixed_labels"].dtype == torch.int64 and it["mask"].dtype == torch.float32
    for k in ("fixed", "moving"):
        assert 0 <= float(it[k].min()) and float(it[k].max()) <= 1
    before, after_linear = [], []
    for i in range(4):
        it = ds[i]
        f, m, u = it["fixed_labels"][None], it["moving_labels"][None], it["dvf"][None]
        warped = regedu.warp(m, u, mode="nearest")
        assert torch.equal(warped, f)  # the ground truth maps moving labels exactly onto fixed labels
        before.append(_dice(it["fixed_labels"], it["moving_labels"]))
        after_linear.append(float(regedu.dice(f, regedu.warp_labels(m, u, mode="linear"))))
        assert float(regedu.folding_fraction(u)) == 0.0
    assert np.mean(after_linear) > np.mean(before) + 0.05 and np.mean(before) < 0.9
    # the images follow the ground truth too (intensity changes switched off)
    clean = data.PairDataset("brain", mode="eval", size=2, ndim=2, gamma=0, bias=0, noise=0, max_displacement=6.0)
    it = clean[0]
    moved = regedu.warp(it["moving"][None], it["dvf"][None])[0]
    assert float(((moved - it["fixed"]) ** 2).mean()) < 0.3 * float(((it["moving"] - it["fixed"]) ** 2).mean())


def test_pair_dataset_train_on_the_fly_eval_fixed():
    train = data.PairDataset(mode="train", size=4, seed=3)
    a, b = train[0], train[0]
    assert not torch.equal(a["dvf"], b["dvf"])  # a fresh deformation every time
    again = data.PairDataset(mode="train", size=4, seed=3)
    assert torch.equal(again[0]["dvf"], a["dvf"])  # ... reproducible from the seed
    ev = data.PairDataset(mode="eval", size=4, seed=3)
    x, y = ev[1], ev[1]
    for k in x:
        assert torch.equal(x[k], y[k])
    assert not torch.equal(ev[0]["dvf"], ev[1]["dvf"])
    # different deformation models and disjoint seed ranges
    assert train.model == "svf" and ev.model == "bspline"
    assert ev.item_seed(0) >= data.EVAL_SEED_OFFSET > max(train.item_seed(i) for i in range(20))
    assert data.PairDataset(mode="eval", size=4, seed=4).item_seed(0) != ev.item_seed(0)


def test_pair_dataset_3d_and_dataloader():
    ds = data.PairDataset("brain", mode="eval", size=2, ndim=3, resolution=4)
    it = ds[0]
    assert it["fixed"].shape == (1, 40, 48, 40) and it["dvf"].shape == (3, 40, 48, 40)
    f, m, u = it["fixed_labels"][None], it["moving_labels"][None], it["dvf"][None]
    assert torch.equal(regedu.warp(m, u, mode="nearest"), f)
    assert float(regedu.dice(f, m)) < 0.95
    assert float(regedu.folding_fraction(u)) == 0.0  # the B-spline velocity of eval mode is diffeomorphic too
    loader = torch.utils.data.DataLoader(data.PairDataset(size=4, seed=1), batch_size=2)
    batch = next(iter(loader))
    assert batch["fixed"].shape == (2, 1, 96, 80) and batch["dvf"].shape == (2, 2, 96, 80)


def test_pair_dataset_sources_and_modalities():
    img, lab = data.make_shape("c", size=48)
    ds = data.PairDataset((img, lab), mode="train", size=2, seed=0, max_displacement=4.0)
    it = ds[0]
    assert it["fixed"].shape == (1, 48, 48) and it["dvf"].shape == (2, 48, 48)
    mm = data.PairDataset(mode="eval", size=2, modality="t2", gamma=0, bias=0, noise=0)
    it = mm[0]
    lab_f = it["fixed_labels"][0]
    # fixed is T2-like (CSF brighter than WM), moving is T1 (the reverse)
    assert float(it["fixed"][0][lab_f == 1].mean()) > float(it["fixed"][0][lab_f == 3].mean())
    lab_m = it["moving_labels"][0]
    assert float(it["moving"][0][lab_m == 1].mean()) < float(it["moving"][0][lab_m == 3].mean())
    with pytest.raises(ValueError, match="PairDataset: mode must be one of 'train', 'eval'"):
        data.PairDataset(mode="test")
    with pytest.raises(ValueError, match="PairDataset: size"):
        data.PairDataset(size=0)
    with pytest.raises(IndexError, match="out of range"):
        data.PairDataset(size=2)[2]


# ----------------------------------------------------------------------------- second contrast
def test_t2_like_contrast_and_alignment():
    s = data.brain_slice("axial")
    t2 = data.t2_like(s)
    assert t2.shape == s.image.shape and 0 <= float(t2.min()) and float(t2.max()) <= 1
    means = [float(t2[s.labels == k].mean()) for k in (1, 2, 3)]
    assert means[0] > means[1] > means[2]  # CSF bright, grey matter intermediate, white matter dark
    brain = s.mask
    assert float(regedu.ncc(s.image, t2, mask=brain)) < 0  # inverted contrast inside the brain
    mi_aligned = float(regedu.mutual_information(s.image, t2))
    mi_shifted = float(regedu.mutual_information(s.image, torch.roll(t2, 4, dims=3)))
    assert mi_aligned > mi_shifted
    from_labels = data.t2_like(s.labels, noise=0.05, seed=1)
    assert from_labels.shape == s.image.shape
    assert torch.equal(from_labels, data.t2_like(s.labels, noise=0.05, seed=1))
    with pytest.raises(ValueError, match=r"t2_like: labels must lie in \[0, 3\]"):
        data.t2_like(s.labels + 5)


# ----------------------------------------------------------------------------- digits
def test_digits_and_distortions():
    x, y = data.load_digits(32)
    assert x.shape == (1797, 1, 32, 32) and y.shape == (1797,) and set(y.tolist()) == set(range(10))
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    train, test = data.DistortedDigits("train", seed=0), data.DistortedDigits("test", seed=0)
    assert len(train) + len(test) == 1797
    img, label = train[0]
    assert img.shape == (1, 40, 40) and isinstance(label, int) and 0 <= label <= 9
    assert torch.equal(img, data.DistortedDigits("train", seed=0)[0][0])
    assert not torch.equal(img, data.DistortedDigits("train", seed=1)[0][0])
    plain = data.DistortedDigits("train", rotation=0, scale=(1, 1), translation=0)
    assert torch.allclose(plain[3][0], plain.clean(3), atol=1e-5)
    cl = data.DistortedDigits("train", clutter=6, seed=0)
    assert float(cl[0][0].sum()) > float(img.sum())
    assert not torch.equal(train.matrix(0), torch.eye(3, dtype=torch.float64))


def test_import_is_light():
    code = "import sys, regedu; print(sorted(m for m in ('nilearn', 'sklearn', 'nibabel', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
