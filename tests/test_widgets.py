"""regedu.widgets driven from code: set the controls, check what is shown against the maths."""

import io
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import regedu
from regedu import similarity
from regedu.transforms import affine_matrix, image_center, translation_matrix

ipywidgets = pytest.importorskip("ipywidgets")

from regedu.widgets import (  # noqa: E402
    AffineExplorer,
    DVFExplorer,
    RegistrationPlayback,
    SimilarityLandscape,
    VolumeViewer,
    second_contrast,
)
from regedu.widgets.similarity_landscape import local_optima  # noqa: E402
from regedu.widgets.volume_viewer import label_boundaries  # noqa: E402


def blob_image(size=48, seed=0):
    """A smooth, asymmetric test image (1, 1, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, size // 4, size // 4, generator=g)
    img = regedu.resize(x, shape=(size, size))
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    img = img * ((yy - size * 0.45) ** 2 + (xx - size * 0.55) ** 2 < (size * 0.38) ** 2)
    return img


def png_size(png: bytes):
    return Image.open(io.BytesIO(png)).size


@pytest.fixture(autouse=True)
def _close_widgets():
    """Close every widget created in a test (ipywidgets keeps a registry)."""
    made = []
    import regedu.widgets._base as base

    orig = base.FigureWidget._finish

    def track(self, *a, **k):
        made.append(self)
        return orig(self, *a, **k)

    base.FigureWidget._finish = track
    yield
    base.FigureWidget._finish = orig
    for w in made:
        w.close()


def test_import_regedu_does_not_import_ipywidgets():
    code = "import sys, regedu; print('ipywidgets' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


# ------------------------------------------------------------------------------------ affine explorer
def test_affine_identity_shows_the_moving_image_and_rotation_zero_restores_it():
    img = blob_image()
    w = AffineExplorer(img)
    d = w.displayed
    np.testing.assert_allclose(d["matrix"], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(d["moved"], img[0, 0].numpy(), atol=1e-5)
    assert d["ssd"] == pytest.approx(0.0, abs=1e-6) and d["ncc"] == pytest.approx(1.0, abs=1e-4)
    first_png = w.png
    w.set(rotation=30)
    assert np.abs(w.displayed["moved"] - img[0, 0].numpy()).max() > 0.2
    assert w.png != first_png
    assert w.displayed["ncc"] < 0.95 and w.displayed["ssd"] > 1.0
    w.set(rotation=0)
    np.testing.assert_allclose(w.displayed["moved"], img[0, 0].numpy(), atol=1e-5)


def test_affine_translation_shifts_as_affine_warp_and_the_grid_follows():
    img = blob_image()
    w = AffineExplorer(img)
    w.set(t0=5)
    moved = w.displayed["moved"]
    expected = regedu.affine_warp(img, translation_matrix(torch.tensor([5.0, 0.0])), padding_mode="zeros")
    np.testing.assert_allclose(moved, expected[0, 0].numpy(), atol=1e-5)
    # pull-back: moved(i, j) = moving(i + 5, j), zeros where that falls outside
    np.testing.assert_allclose(moved[:-5], img[0, 0, 5:].numpy(), atol=1e-5)
    assert np.all(moved[-5:] == 0)
    np.testing.assert_allclose(w.displayed["matrix"][:2, 2], [5.0, 0.0], atol=1e-6)
    rows = np.arange(48, dtype=np.float32)[:, None]
    np.testing.assert_allclose(w.displayed["phi"][0], np.broadcast_to(rows + 5, (48, 48)), atol=1e-5)


def test_affine_rotation_90_is_rot90_and_matrix_and_similarities_match_regedu():
    img = blob_image()
    fixed = blob_image(seed=1)
    w = AffineExplorer(fixed, img)
    w.set(rotation=90)
    np.testing.assert_allclose(w.displayed["moved"], torch.rot90(img, -1, dims=(-2, -1))[0, 0].numpy(), atol=1e-4)
    w.set(rotation=20, t1=-3.5, s0=1.2, s1=0.9, shear=0.1)
    A = affine_matrix(torch.tensor([math.radians(20), 1.2, 0.9, 0.1, 0.0, -3.5]), center=image_center((48, 48)))
    np.testing.assert_allclose(w.displayed["matrix"], A.numpy(), atol=1e-5)
    moved = regedu.affine_warp(img, A, padding_mode="zeros")
    np.testing.assert_allclose(w.displayed["moved"], moved[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(w.displayed["difference"], (fixed - moved)[0, 0].numpy(), atol=1e-5)
    assert w.displayed["ssd"] == pytest.approx(float(similarity.ssd(fixed, moved)), rel=1e-4)
    assert w.displayed["ncc"] == pytest.approx(float(similarity.ncc(fixed, moved)), abs=1e-5)
    assert w.displayed["mi"] == pytest.approx(float(similarity.mutual_information(fixed, moved)), abs=1e-5)
    assert w.state() == {"rotation": 20.0, "t0": 0.0, "t1": -3.5, "s0": 1.2, "s1": 0.9, "shear": 0.1}
    assert "SSD" in w.info.value and "NCC" in w.info.value and "MI" in w.info.value


def test_affine_slider_move_updates_like_set_and_the_widget_tree_holds_the_image():
    img = blob_image()
    w = AffineExplorer(img.numpy()[0, 0])  # plain arrays work too
    w.controls["rotation"].value = 45  # what a browser slider move does (the observer runs)
    assert w.displayed["matrix"][0, 0] == pytest.approx(math.cos(math.radians(45)), abs=1e-6)
    assert isinstance(w.widget, ipywidgets.VBox) and w.image in w.widget.children
    width, height = png_size(w.png)
    assert (width, height) == w.figure.canvas.get_width_height()
    assert w.timings["total"] > 0


def test_affine_errors_are_clear():
    img = blob_image()
    w = AffineExplorer(img)
    with pytest.raises(ValueError, match="unknown control 'angle'; the controls are rotation"):
        w.set(angle=3)
    with pytest.raises(ValueError, match="rotation must be between -180.0 and 180.0, got 300"):
        w.set(rotation=300)
    with pytest.raises(ValueError, match="AffineExplorer: fixed must be one 2D image"):
        AffineExplorer(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="fixed and moving must have the same shape"):
        AffineExplorer(img, torch.zeros(1, 1, 40, 48))
    with pytest.raises(TypeError, match="fixed must be a torch.Tensor, got list"):
        AffineExplorer([[0.0, 1.0], [1.0, 0.0]])


def test_a_failing_update_from_a_slider_is_shown_not_raised(monkeypatch):
    w = AffineExplorer(blob_image())

    def boom():
        raise RuntimeError("something broke")

    monkeypatch.setattr(w, "_redraw", boom)
    w.controls["rotation"].value = 10  # must not raise inside the comm callback
    assert "RuntimeError: something broke" in w.status.value


# ------------------------------------------------------------------------------------ similarity landscape
def test_landscape_mi_peaks_at_true_alignment_across_modalities_but_ssd_does_not():
    from regedu import data

    sl = data.brain_slice("axial")
    w = SimilarityLandscape(sl.image, multimodal=data.t2_like(sl), parameters="rotation", size=32, steps=13, progress=False)
    zero = int(np.argmin(np.abs(w.axes_values["rotation"])))
    for m in ("ssd", "ncc", "mi"):
        assert w.best["mono"][m] == (0.0,)
    assert w.best["multi"]["mi"] == (0.0,)
    assert w.best["multi"]["ssd"] != (0.0,)
    ssd = w.landscapes["multi"]["ssd"]
    assert ssd[zero] > ssd[zero - 1] and ssd[zero] > ssd[zero + 1]  # true alignment is a local *maximum* of SSD
    assert (0.0,) not in w.optima["multi"]["ssd"] and w.best["multi"]["ssd"] in w.optima["multi"]["ssd"]
    # the caption names the parameter of each optimum (no raw tuples)
    assert "best at SSD: rotation = 0; NCC: rotation = 0; MI: rotation = 0" in w.info.value and "(0.0,)" not in w.info.value


def test_landscape_slider_only_moves_the_marker_and_values_match_direct_evaluation(monkeypatch):
    img = blob_image(40)
    w = SimilarityLandscape(img, parameters=("rotation", "t1"), ranges={"rotation": (-30, 30), "t1": (-8, 8)},
                            steps=5, size=None, progress=False)
    assert w.landscapes["mono"]["ssd"].shape == (5, 5)
    assert w.displayed["index"] == (2, 2) and w.displayed["position"] == (0.0, 0.0)
    monkeypatch.setattr(w, "_evaluate", lambda *a, **k: pytest.fail("the landscape must not be recomputed"))
    before = w.png
    w.set(rotation=15, t1=-4)
    d = w.displayed
    assert d["index"] == (3, 1) and d["position"] == (15.0, -4.0)
    assert w.png != before
    A = affine_matrix(torch.tensor([math.radians(15), 1, 1, 0, 0, -4.0]), center=image_center((40, 40)))
    multi = second_contrast(img)
    for pair, moving in (("mono", img), ("multi", multi)):
        moved = regedu.affine_warp(moving, A, padding_mode="zeros")
        np.testing.assert_allclose(d["moved"][pair], moved[0, 0].numpy(), atol=1e-5)
        assert d["current"][pair]["ssd"] == pytest.approx(float(similarity.ssd(img, moved)), rel=1e-4)
        assert d["current"][pair]["ncc"] == pytest.approx(float(similarity.ncc(img, moved)), abs=1e-4)
        assert d["current"][pair]["mi"] == pytest.approx(float(similarity.mutual_information(img, moved)), abs=1e-4)
        assert d["current"][pair]["ncc"] == w.landscapes[pair]["ncc"][3, 1]


def test_landscape_translation_uses_input_voxels_when_downsampled():
    img = blob_image(48)
    w = SimilarityLandscape(img, parameters="t0", ranges={"t0": (-8, 8)}, steps=5, size=24, progress=False)
    assert w.shape == (24, 24)
    w.set(t0=8)
    # 8 input voxels = 8 * 23 / 47 landscape voxels
    A = translation_matrix(torch.tensor([8 * 23 / 47, 0.0]))
    small = regedu.resize(img, shape=(24, 24))
    np.testing.assert_allclose(w.displayed["moved"]["mono"], regedu.affine_warp(small, A, padding_mode="zeros")[0, 0].numpy(), atol=1e-5)


def test_local_optima_and_landscape_errors():
    v = np.array([0.0, 2.0, 1.0, 3.0, 0.5])
    assert sorted(local_optima(v, maximise=True)[:, 0].tolist()) == [1, 3]
    assert sorted(local_optima(v, maximise=False)[:, 0].tolist()) == [0, 2, 4]
    assert local_optima(np.zeros(5), maximise=True).size == 0  # a flat landscape has no optimum
    img = blob_image(16)
    with pytest.raises(ValueError, match="steps must be an odd number >= 3"):
        SimilarityLandscape(img, steps=4, progress=False)
    with pytest.raises(ValueError, match="parameters must be one of 'rotation', 't0', 't1', 'scale', got 'tx'"):
        SimilarityLandscape(img, parameters="tx", progress=False)
    with pytest.raises(ValueError, match="multimodal must have the shape of fixed"):
        SimilarityLandscape(img, multimodal=torch.zeros(1, 1, 8, 8), progress=False)


# ------------------------------------------------------------------------------------ DVF explorer
def test_dvf_zero_amplitude_is_the_identity():
    img = blob_image()
    w = DVFExplorer(img, amplitude=0.0)
    d = w.displayed
    assert np.all(d["dvf"] == 0) and d["folding_count"] == 0
    np.testing.assert_allclose(d["warped"], img[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(d["jacobian"], 1.0, atol=1e-6)


def test_dvf_field_warp_and_folding_count_match_regedu():
    img = blob_image()
    w = DVFExplorer(img, seed=3)
    w.set(amplitude=6.0, smoothness=2.0)
    d = w.displayed
    u = regedu.random_dvf((48, 48), max_displacement=6.0, smoothness=2.0, seed=3)
    np.testing.assert_allclose(d["dvf"], u[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(d["warped"], regedu.warp(img, u)[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(d["phi"][1], np.arange(48)[None, :] + u[0, 1].numpy(), atol=1e-5)
    np.testing.assert_allclose(d["jacobian"], regedu.jacobian_determinant(u)[0].numpy(), atol=1e-5)
    n = 48 * 48
    assert d["folding_count"] > 0  # this field folds
    assert d["folding_count"] == round(float(regedu.folding_fraction(u)[0]) * n)
    assert d["folding_count"] == int(d["folding"].sum()) == int((d["jacobian"] <= 0).sum())
    assert f"folding: {d['folding_count']} voxels" in w._jac_title.get_text()
    # the arrows drawn are the field at the arrow positions (x = column component, y = row component)
    q = d["quiver"]
    np.testing.assert_allclose(q["u"], u[0, 1].numpy()[q["y"], q["x"]], atol=1e-6)
    w.set(amplitude=0.5)
    assert w.displayed["folding_count"] == 0


def test_dvf_bspline_model_shows_the_control_grid():
    img = blob_image()
    w = DVFExplorer(img)
    assert w.controls["spacing"].disabled and not w.controls["smoothness"].disabled
    w.set(model="bspline", spacing=12, amplitude=3.0, seed=2)
    d = w.displayed
    u = regedu.random_bspline_dvf((48, 48), spacing=12, max_displacement=3.0, seed=2)
    np.testing.assert_allclose(d["dvf"], u[0].numpy(), atol=1e-5)
    assert d["control_points"].shape == (int(np.prod(regedu.fields.bspline_grid_shape((48, 48), 12))), 2)
    assert d["control_points"].min() == -12 and w.controls["smoothness"].disabled
    with pytest.raises(ValueError, match="model must be one of 'gaussian', 'bspline', got 'demons'"):
        w.set(model="demons")


# ------------------------------------------------------------------------------------ registration playback
def _snapshots(img, k=4):
    snaps = []
    for i in range(k):
        u = regedu.random_dvf((48, 48), max_displacement=1.0 + i, seed=i)
        snaps.append((regedu.warp(img, u), u))
    return snaps


def test_playback_at_snapshot_k_shows_snapshot_k():
    img = blob_image()
    snaps = _snapshots(img)
    loss = [4.0, 3.0, 2.5, 2.0]
    w = RegistrationPlayback(img, snaps, loss, moving=img, xlabel="epoch")
    for k in (2, 0, 3):
        w.set(snapshot=k)
        d = w.displayed
        assert d["snapshot"] == k and d["iteration"] == k and d["loss"] == loss[k]
        np.testing.assert_allclose(d["moved"], snaps[k][0][0, 0].numpy())
        np.testing.assert_allclose(d["dvf"], snaps[k][1][0].numpy())
        np.testing.assert_allclose(d["difference"], (img - snaps[k][0])[0, 0].numpy(), atol=1e-6)
        assert f"epoch {k}" in w.info.value
        assert w.info.value.startswith(f"snapshot {k} (of 0-3")  # the caption counts as the slider does
    with pytest.raises(ValueError, match="snapshot must be between 0 and 3, got 4"):
        w.set(snapshot=4)


def test_playback_from_a_real_registration_result():
    from regedu.registration import register

    fixed = blob_image(32)
    moving = regedu.affine_warp(fixed, translation_matrix(torch.tensor([2.0, -1.5])))
    res = register(fixed, moving, transform="translation", levels=1, iterations=12, snapshot_every=4, progress=False)
    w = RegistrationPlayback.from_result(fixed, moving, res)
    snaps = res.history["snapshots"]
    assert w.iterations == [s[0] for s in snaps]
    w.set(snapshot=len(snaps) - 1)
    np.testing.assert_allclose(w.displayed["moved"], snaps[-1][1][0, 0].numpy())
    it = snaps[-1][0]
    steps = res.history["iteration"]
    assert w.displayed["loss"] == res.history["loss"][int(np.argmin(np.abs(np.asarray(steps) - it)))]
    res.history["snapshots"] = []
    with pytest.raises(ValueError, match="the result has no snapshots; run regedu.register\\(..., snapshot_every=10\\)"):
        RegistrationPlayback.from_result(fixed, moving, res)


def test_playback_3d_shows_the_middle_slice_and_errors():
    vol = torch.rand(1, 1, 6, 10, 12)
    u = torch.zeros(1, 3, 6, 10, 12)
    u[:, 1] = 2.0
    w = RegistrationPlayback(vol, [(0, vol, u), (5, vol * 2, u)], slice_axis=0)
    w.set(snapshot=1)
    np.testing.assert_allclose(w.displayed["moved"], (vol * 2)[0, 0, 3].numpy())
    assert w.displayed["dvf"].shape == (2, 10, 12) and np.all(w.displayed["dvf"][0] == 2.0)
    img = blob_image()
    with pytest.raises(ValueError, match="snapshots is empty"):
        RegistrationPlayback(img, [])
    with pytest.raises(ValueError, match="give iterations="):
        RegistrationPlayback(img, _snapshots(img, 2), loss=[1.0, 2.0, 3.0])


# ------------------------------------------------------------------------------------ volume viewer
def test_volume_viewer_index_orientation_shows_that_slice():
    g = torch.Generator().manual_seed(0)
    vol = torch.rand(1, 1, 8, 10, 12, generator=g)
    w = VolumeViewer(vol, orientation="index")
    assert w.state()["axis0"] == 4
    w.set(axis0=2, axis1=7, axis2=11)
    d = w.displayed
    np.testing.assert_allclose(d["fixed"]["axis0"], vol[0, 0, 2].numpy())
    np.testing.assert_allclose(d["fixed"]["axis1"], vol[0, 0, :, 7].numpy())
    np.testing.assert_allclose(d["fixed"]["axis2"], vol[0, 0, :, :, 11].numpy())
    assert d["indices"] == {"axis0": 2, "axis1": 7, "axis2": 11}


def test_volume_viewer_ras_matches_brain_slice_and_draws_label_contours():
    from regedu import data

    vol = data.load_brain(4)
    w = VolumeViewer(vol)
    assert w.views == ("sagittal", "coronal", "axial")
    w.set(axial=18, coronal=30, sagittal=15)
    for plane in w.views:
        sl = data.brain_slice(plane, w.state()[plane], resolution=4)
        np.testing.assert_allclose(w.displayed["fixed"][plane], sl.image[0, 0].numpy())
        np.testing.assert_array_equal(w.displayed["labels"][plane], sl.labels[0, 0].numpy())
        np.testing.assert_array_equal(w.displayed["contours"][plane], label_boundaries(sl.labels[0, 0].numpy()))
        assert w.displayed["contours"][plane].sum() > 0
    w.set(contours=False)
    assert all(not c.any() for c in w.displayed["contours"].values())


def test_volume_viewer_comparison_modes():
    g = torch.Generator().manual_seed(1)
    fixed = torch.rand(1, 1, 8, 8, 8, generator=g)
    moved = torch.rand(1, 1, 8, 8, 8, generator=g)
    w = VolumeViewer(fixed, moved, orientation="index", mode="checkerboard", checker=2)
    lo, hi = float(min(fixed.min(), moved.min())), float(max(fixed.max(), moved.max()))
    f = (fixed[0, 0, 4].numpy() - lo) / (hi - lo)
    m = (moved[0, 0, 4].numpy() - lo) / (hi - lo)
    shown = w.displayed["shown"]["axis0"]
    np.testing.assert_allclose(shown[0:2, 0:2, 0], f[0:2, 0:2], atol=1e-6)  # first square: fixed
    np.testing.assert_allclose(shown[0:2, 2:4, 0], m[0:2, 2:4], atol=1e-6)  # next square: moved
    w.set(mode="overlay")
    shown = w.displayed["shown"]["axis0"]
    np.testing.assert_allclose(shown[..., 0], f, atol=1e-6)
    np.testing.assert_allclose(shown[..., 1], m, atol=1e-6)
    w.set(mode="difference")
    same = VolumeViewer(fixed, fixed.clone(), orientation="index", mode="difference")
    centre = same.displayed["shown"]["axis0"]
    assert np.ptp(centre.reshape(-1, 3), axis=0).max() < 1e-6  # all one colour: zero difference
    with pytest.raises(ValueError, match="mode must be one of 'fixed', got 'overlay'"):
        VolumeViewer(fixed, mode="overlay")
    with pytest.raises(ValueError, match="moved must have the spatial size of fixed"):
        VolumeViewer(fixed, torch.rand(1, 1, 8, 8, 6))


def test_second_contrast_of_labels_is_the_course_t2_model():
    """One T2 model in the course: second_contrast of a Volume or a label map is regedu.data.t2_like."""
    from regedu.data import t2_like

    labels = torch.zeros(1, 1, 24, 24, dtype=torch.long)
    labels[..., 4:20, 4:20] = 3
    labels[..., 8:16, 8:16] = 2
    labels[..., 11:13, 11:13] = 1
    assert torch.equal(second_contrast(labels), t2_like(labels))
    t2 = second_contrast(labels)
    # CSF (1) brighter than grey matter (2) brighter than white matter (3): the T1 order reversed
    assert t2[0, 0, 12, 12] > t2[0, 0, 9, 9] > t2[0, 0, 5, 5] > t2[0, 0, 0, 0]
    with pytest.raises(TypeError, match=r"second_contrast: image must be a torch.Tensor or a regedu.data.Volume, got list"):
        second_contrast([[0.0]])
