"""The iterative registration engine: known transforms are recovered, deformable models register real
brain data, MI handles a multi-modal pair, 3D works, SVF does not fold, and the bookkeeping (history,
snapshots, callback, progress, errors) behaves as documented."""

import math

import pytest
import torch

import regedu
import regedu.data as data
from regedu import transforms as T
from regedu.registration import (
    AffineModel,
    BSplineModel,
    DenseModel,
    RegistrationResult,
    SVFModel,
    demons,
    register,
    rescale_matrix,
)


@pytest.fixture(scope="module")
def brain2d():
    """A real 2D brain MRI slice (2 mm, 96 x 80) with CSF/GM/WM labels."""
    v = data.brain_slice(resolution=2)
    return v


@pytest.fixture(scope="module")
def deformed_pair(brain2d):
    """The slice and a smoothly deformed copy with the known (pull-back) displacement."""
    img, lab = brain2d.image, brain2d.labels
    u_true = regedu.random_bspline_dvf(img.shape[2:], spacing=24, max_displacement=4.0, seed=3)
    return dict(fixed=regedu.warp(img, u_true), fixed_labels=regedu.warp_labels(lab, u_true),
                moving=img, moving_labels=lab, dvf=u_true)


def _moving_for(image, A):
    """A moving image such that warping it by ``A`` gives back ``image``: moving = image o A^-1."""
    return regedu.affine_warp(image, torch.linalg.inv(A))


# --------------------------------------------------------------------------------------------
# parametric models recover known transforms
# --------------------------------------------------------------------------------------------

def test_rigid_recovers_known_rotation_and_translation(brain2d):
    img = brain2d.image
    c = T.image_center(img.shape[2:])
    truth = torch.tensor([math.radians(7.0), 2.5, -1.5])
    moving = _moving_for(img, T.rigid_matrix(truth, center=c))
    result = register(img, moving, transform="rigid", progress=False)
    est = T.rigid_params(result.matrix[0], center=c)
    assert abs(math.degrees(float(est[0] - truth[0]))) < 1.0
    assert (est[1:] - truth[1:]).abs().max() < 0.5
    assert result.history["loss"][-1] < 0.25 * result.history["loss"][0]


def test_affine_recovers_known_matrix(brain2d):
    img = brain2d.image
    c = T.image_center(img.shape[2:])
    truth = torch.tensor([math.radians(-5.0), 1.08, 0.94, 0.04, 3.0, -2.0])
    moving = _moving_for(img, T.affine_matrix(truth, center=c))
    result = register(img, moving, transform="affine", progress=False)
    est = T.affine_params(result.matrix[0], center=c)
    assert abs(math.degrees(float(est[0] - truth[0]))) < 1.0
    assert (est[1:3] - truth[1:3]).abs().max() < 0.02  # scales
    assert abs(float(est[3] - truth[3])) < 0.02  # shear
    assert (est[4:] - truth[4:]).abs().max() < 0.5  # translation, voxels
    # the result's dvf is the matrix's displacement field, and warp uses the matrix
    assert torch.allclose(result.dvf, regedu.affine_to_dvf(result.matrix, img.shape[2:]), atol=1e-4)
    assert torch.allclose(result.warp(moving), result.moved)


def test_batched_translations_are_recovered_independently(brain2d):
    img = brain2d.image
    shifts = torch.tensor([[3.0, -2.0], [-1.5, 2.5]])
    moving = torch.cat([_moving_for(img, T.translation_matrix(s)) for s in shifts])
    result = register(img, moving, transform="translation", progress=False)
    assert result.matrix.shape == (2, 3, 3)
    assert (result.matrix[:, :2, 2] - shifts).abs().max() < 0.3


def test_mutual_information_aligns_a_multimodal_pair_that_ssd_cannot(brain2d):
    t2 = data.t2_like(brain2d)  # T2-like contrast aligned with the T1: CSF bright, WM dark
    t1 = brain2d.image
    c = T.image_center(t1.shape[2:])
    truth = torch.tensor([math.radians(6.0), 1.05, 0.97, 0.0, 3.0, -2.0])
    moving = _moving_for(t1, T.affine_matrix(truth, center=c))

    def errors(result):
        est = T.affine_params(result.matrix[0], center=c)
        return abs(math.degrees(float(est[0] - truth[0]))), float((est[4:] - truth[4:]).abs().max())

    mi_angle, mi_shift = errors(register(t2, moving, transform="affine", similarity="mi", iterations=(60, 40, 20), progress=False))
    ssd_angle, ssd_shift = errors(register(t2, moving, transform="affine", similarity="ssd", progress=False))
    assert mi_angle < 1.0 and mi_shift < 0.5
    assert ssd_angle > 3.0 and ssd_angle > 5 * mi_angle


# --------------------------------------------------------------------------------------------
# deformable models on real brain data
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transform, similarity", [("bspline", "lncc"), ("dense", "mse"), ("svf", "lncc")])
def test_deformable_recovers_known_smooth_deformation(deformed_pair, transform, similarity):
    p = deformed_pair
    before = float(regedu.dice(p["fixed_labels"], p["moving_labels"]))
    epe_before = float(regedu.endpoint_error(torch.zeros_like(p["dvf"]), p["dvf"]))
    result = register(p["fixed"], p["moving"], transform=transform, similarity=similarity, progress=False)
    after = float(regedu.dice(p["fixed_labels"], result.warp_labels(p["moving_labels"])))
    epe_after = float(regedu.endpoint_error(result.dvf, p["dvf"]))
    assert before < 0.8
    assert after > 0.92 and after > before + 0.15
    assert epe_after < 0.5 * epe_before
    assert float(regedu.folding_fraction(result.dvf)) < 0.005
    assert result.matrix is None and result.dvf.shape == p["dvf"].shape


def test_svf_does_not_fold_where_weakly_regularised_dense_does(brain2d):
    img = brain2d.image
    u_true = regedu.integrate_velocity(regedu.random_bspline_dvf(img.shape[2:], spacing=16, max_displacement=8.0, seed=5))
    fixed = regedu.warp(img, u_true)
    dense = register(fixed, img, transform="dense", similarity="mse", weight=1e-4, sigma=0, progress=False)
    svf = register(fixed, img, transform="svf", similarity="lncc", progress=False)
    assert float(regedu.folding_fraction(dense.dvf)) > 0.01
    assert float(regedu.folding_fraction(svf.dvf)) == 0.0
    assert float(regedu.mse(fixed, svf.moved)) < 0.5 * float(regedu.mse(fixed, img))
    # the result carries the velocity, and the DVF is its exponential
    assert torch.allclose(regedu.integrate_velocity(svf.velocity), svf.dvf, atol=1e-4)


def test_small_3d_volume_registers():
    vol = data.load_brain(4)  # 40 x 48 x 40
    u_true = regedu.random_bspline_dvf(vol.image.shape[2:], spacing=12, max_displacement=3.0, seed=2)
    fixed, fixed_labels = regedu.warp(vol.image, u_true), regedu.warp_labels(vol.labels, u_true)
    result = register(fixed, vol.image, transform="bspline", similarity="lncc", progress=False)
    before = float(regedu.dice(fixed_labels, vol.labels))
    after = float(regedu.dice(fixed_labels, result.warp_labels(vol.labels)))
    assert after > before + 0.1
    assert result.dvf.shape == (1, 3, 40, 48, 40)
    finest = [loss for loss, lvl in zip(result.history["loss"], result.history["level"]) if lvl == max(result.history["level"])]
    assert finest[-1] < finest[0]
    assert float(regedu.folding_fraction(result.dvf)) < 0.005


def test_affine_then_deformable_composes_with_the_initial_matrix(deformed_pair):
    p = deformed_pair
    shape = p["moving"].shape[2:]
    A = T.rigid_matrix(torch.tensor([math.radians(4.0), 2.0, -1.0]), center=T.image_center(shape))
    # fixed(x) = moving(A(x + u(x))): a rigid misalignment on top of the smooth deformation
    w = regedu.compose(regedu.affine_to_dvf(A, shape), p["dvf"])
    fixed, fixed_labels = regedu.warp(p["moving"], w), regedu.warp_labels(p["moving_labels"], w)
    affine = register(fixed, p["moving"], transform="affine", progress=False)
    # no iterations: the deformable result is exactly the initial affine transform
    start = register(fixed, p["moving"], transform="bspline", init=affine, iterations=0, progress=False)
    assert torch.allclose(start.dvf, affine.dvf, atol=1e-4)
    both = register(fixed, p["moving"], transform="bspline", similarity="lncc", init=affine, progress=False)
    d_affine = float(regedu.dice(fixed_labels, affine.warp_labels(p["moving_labels"])))
    d_both = float(regedu.dice(fixed_labels, both.warp_labels(p["moving_labels"])))
    assert d_both > d_affine + 0.1 and d_both > 0.92
    # a plain matrix works as init too
    start_matrix = register(fixed, p["moving"], transform="dense", init=affine.matrix[0], iterations=0, progress=False)
    assert torch.allclose(start_matrix.dvf, affine.dvf, atol=1e-4)


def test_demons_register_and_the_diffeomorphic_variant_does_not_fold(deformed_pair):
    p = deformed_pair
    before = float(regedu.dice(p["fixed_labels"], p["moving_labels"]))
    for diffeomorphic in (False, True):
        result = demons(p["fixed"], p["moving"], diffeomorphic=diffeomorphic, progress=False)
        assert isinstance(result, RegistrationResult) and result.transform == "demons"
        after = float(regedu.dice(p["fixed_labels"], result.warp_labels(p["moving_labels"])))
        assert after > before + 0.15
        assert result.history["loss"][-1] < result.history["loss"][0]
    assert float(regedu.folding_fraction(result.dvf)) == 0.0


# --------------------------------------------------------------------------------------------
# the pyramid carries transformations between grids correctly
# --------------------------------------------------------------------------------------------

def test_rescaled_matrix_is_the_same_transformation_on_a_coarser_grid():
    fine, coarse = (65, 49), (33, 25)
    A = T.affine_matrix(torch.tensor([0.2, 1.1, 0.9, 0.05, 3.0, -4.0]), center=T.image_center(fine))
    A_coarse = rescale_matrix(A, fine, coarse)
    # the coarse displacement field, moved to the fine grid, is the fine one (linear fields resample exactly)
    up = regedu.resize_dvf(regedu.affine_to_dvf(A_coarse, coarse), fine)
    assert torch.allclose(up, regedu.affine_to_dvf(A, fine), atol=1e-4)
    assert torch.allclose(rescale_matrix(A_coarse, coarse, fine), A, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda shape: AffineModel(shape),
    lambda shape: BSplineModel(shape, spacing=8),
    lambda shape: DenseModel(shape, sigma=0),
    lambda shape: SVFModel(shape, sigma=0),
])
def test_models_keep_their_transformation_across_levels(make):
    fine, coarse = (65, 49), (33, 25)
    torch.manual_seed(0)
    model = make(fine)
    model.set_level(coarse)
    with torch.no_grad():
        for p in model.parameters():
            if tuple(p.shape[2:]) == coarse:  # a dense field or velocity on the coarse grid
                p.copy_(regedu.random_dvf(coarse, 1.5, 4.0, seed=1))
            else:  # matrix parameters or B-spline coefficients
                p.copy_((0.02 if p.dim() <= 3 else 0.5) * torch.randn_like(p))
        u_coarse = model.displacement()
        model.set_level(fine)
        u_fine = model.displacement()
    up = regedu.resize_dvf(u_coarse, fine)
    assert u_fine.abs().max() > 0.1
    assert (up - u_fine).abs().max() < 0.05 * u_fine.abs().max() + 1e-3


def test_bspline_control_points_keep_their_positions_on_every_level():
    model = BSplineModel((97, 81), spacing=8)
    for shape in [(49, 41), (25, 21)]:
        model.set_level(shape)
        assert model.coefficients.shape[2:] == model.grid
        assert regedu.fields.bspline_grid_shape(shape, model.level_spacing(shape)) == model.grid


# --------------------------------------------------------------------------------------------
# mask, callable similarity, devices
# --------------------------------------------------------------------------------------------

def test_mask_excludes_an_artefact_from_the_similarity(brain2d):
    img = brain2d.image
    shift = torch.tensor([2.0, -3.0])
    moving = _moving_for(img, T.translation_matrix(shift))
    artefact = torch.zeros_like(img)
    artefact[..., 10:40, 10:35] = 1.0
    fixed = torch.where(artefact > 0, torch.ones_like(img), img)  # a bright block only in the fixed image
    plain = register(fixed, moving, transform="translation", progress=False)
    masked = register(fixed, moving, transform="translation", mask=1 - artefact, progress=False)
    err_plain = float((plain.matrix[0, :2, 2] - shift).abs().max())
    err_masked = float((masked.matrix[0, :2, 2] - shift).abs().max())
    assert err_masked < 0.3 and err_masked < err_plain


def test_a_callable_similarity_plugs_in_unchanged(brain2d):
    img = brain2d.image
    moving = _moving_for(img, T.translation_matrix(torch.tensor([2.0, 1.0])))
    net = torch.nn.Conv2d(1, 4, 3, padding=1)  # stands in for a learned similarity network
    seen = {}

    def learned(fixed, moved, mask=None):
        seen["mask"] = mask
        return (net(fixed) - net(moved)).pow(2).mean()

    result = register(img, moving, transform="translation", similarity=learned, progress=False)
    assert (result.matrix[0, :2, 2] - torch.tensor([2.0, 1.0])).abs().max() < 0.3
    assert seen["mask"] is None
    register(img, moving, transform="translation", similarity=learned, mask=torch.ones_like(img), iterations=2, progress=False)
    assert seen["mask"] is not None and seen["mask"].shape[2:] == img.shape[2:]


def _devices():
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out


@pytest.mark.parametrize("device", _devices())
def test_outputs_live_on_the_input_device(brain2d, device):
    img = brain2d.image.to(device)
    moving = _moving_for(img, T.translation_matrix(torch.tensor([1.0, -2.0], device=device)))
    for transform in ("affine", "bspline"):
        r = register(img, moving, transform=transform, iterations=5, progress=False)
        assert r.dvf.device.type == device and r.moved.device.type == device
        assert r.warp_labels(brain2d.labels.to(device)).device.type == device


# --------------------------------------------------------------------------------------------
# bookkeeping: history, snapshots, callback, progress bar
# --------------------------------------------------------------------------------------------

def test_history_snapshots_and_callback(brain2d):
    img = brain2d.image
    moving = _moving_for(img, T.translation_matrix(torch.tensor([1.0, 1.0])))
    r = register(img, moving, transform="affine", levels=2, iterations=(6, 4), snapshot_every=3, progress=False)
    h = r.history
    assert len(h["loss"]) == len(h["similarity"]) == len(h["regulariser"]) == len(h["level"]) == len(h["iteration"]) == 10
    assert h["level"] == [0] * 6 + [1] * 4 and h["iteration"] == list(range(10))
    assert all(isinstance(v, float) for v in h["loss"])
    assert [s[0] for s in h["snapshots"]] == [3, 6, 9]
    it, moved, dvf = h["snapshots"][-1]
    assert moved.shape == img.shape and dvf.shape == (1, 2, *img.shape[2:])  # full resolution on every level
    assert r.time > 0 and "affine" in repr(r)

    calls = []

    def stop_after_five(level, iteration, loss, model):
        calls.append((level, iteration, loss))
        return len(calls) == 5

    r = register(img, moving, transform="dense", callback=stop_after_five, progress=False)
    assert len(calls) == 5 and len(r.history["loss"]) == 5 and r.stopped_early
    assert r.dvf.shape == (1, 2, *img.shape[2:])  # still returned at full resolution
    assert isinstance(calls[0][2], float)


def test_deformable_history_records_the_weighted_regulariser(deformed_pair):
    p = deformed_pair
    r = register(p["fixed"], p["moving"], transform="dense", similarity="mse", regulariser="diffusion", weight=0.5,
                 levels=1, iterations=5, progress=False)
    h = r.history
    assert all(abs(total - (s + g)) < 1e-6 for total, s, g in zip(h["loss"], h["similarity"], h["regulariser"]))
    assert max(h["regulariser"]) > 0
    off = register(p["fixed"], p["moving"], transform="dense", regulariser=None, levels=1, iterations=3, progress=False)
    assert off.history["regulariser"] == [0.0, 0.0, 0.0]


def test_progress_bar_can_be_switched_off(brain2d, capsys):
    img = brain2d.image
    register(img, img, transform="translation", iterations=3, progress=True)
    assert "register" in capsys.readouterr().err
    register(img, img, transform="translation", iterations=3, progress=False)
    demons(img, img, iterations=2, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


# --------------------------------------------------------------------------------------------
# clear errors
# --------------------------------------------------------------------------------------------

def test_clear_errors_for_impossible_requests(brain2d):
    img = brain2d.image  # (1, 1, 96, 80)
    with pytest.raises(ValueError, match=r"control-point spacing .* at most the image size minus 1"):
        register(img, img, transform="bspline", spacing=100)
    with pytest.raises(ValueError, match=r"same spatial size.*regedu\.resize\(moving, shape=\(96, 80\)\)"):
        register(img, regedu.resize(img, shape=(64, 64)))
    with pytest.raises(ValueError, match="similarity must be one of 'ssd', 'mse', 'ncc', 'lncc', 'mi' or a callable"):
        register(img, img, similarity="cosine")
    with pytest.raises(ValueError, match="transform must be one of 'translation', 'rigid', 'affine', 'bspline', 'dense', 'svf'"):
        register(img, img, transform="thin-plate")
    with pytest.raises(ValueError, match="regulariser must be 'diffusion', 'bending', 'auto', None or a callable, got 'tv'"):
        register(img, img, transform="dense", regulariser="tv")
    with pytest.raises(ValueError, match=r"fixed must be a 4D or 5D tensor"):
        register(img[0], img[0])
    with pytest.raises(ValueError, match=r"register: fixed and moving must have the same number of spatial dimensions, got fixed \(1, 1, 96, 80\) \(2D\) and moving \(1, 1, 96, 80, 4\) \(3D\)"):
        register(img, img[..., None].expand(-1, -1, -1, -1, 4))
    nan = img.clone()
    nan[0, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="moving contains 1 NaN"):
        register(img, nan)
    with pytest.raises(ValueError, match=r"levels=5 makes the coarsest level \(7, 6\) smaller than 8 voxels"):
        register(img, img, levels=5)
    with pytest.raises(ValueError, match=r"iterations must be one value or 2 values \(one per level, coarse to fine\)"):
        register(img, img, levels=2, iterations=(5, 5, 5))
    with pytest.raises(ValueError, match="weight=0.5 was given but regulariser is None"):
        register(img, img, transform="dense", regulariser=None, weight=0.5)
    with pytest.raises(ValueError, match="optimiser must be one of"):
        register(img, img, optimiser="newton")
    with pytest.raises(ValueError, match=r"init must be \(3, 3\) for 2D images"):
        register(img, img, init=torch.eye(4))
    with pytest.raises(ValueError, match="mask is empty"):
        register(img, img, mask=torch.zeros_like(img))
    with pytest.raises(TypeError, match="unknown keyword argument for transform='affine'"):
        register(img, img, transform="affine", spacing=4)
    with pytest.raises(FloatingPointError, match="the loss became nan at level 0, iteration 0"):
        register(img, img, similarity=lambda f, m, mask=None: (f - m).sum() * float("nan"), iterations=2)
    with pytest.raises(ValueError, match="the similarity loss must return a scalar tensor"):
        register(img, img, similarity=lambda f, m, mask=None: (f - m) ** 2, iterations=2)
    with pytest.raises(ValueError, match="demons: fixed and moving must have the same spatial size"):
        demons(img, regedu.resize(img, shape=(64, 64)))


def test_bspline_spacing_is_checked_on_every_axis():
    img = torch.rand(1, 1, 64, 20)
    with pytest.raises(ValueError, match=r"spacing \(24.0, 24.0\) for an image of shape \(64, 20\)"):
        register(img, img, transform="bspline", spacing=24)
