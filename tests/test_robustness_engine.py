"""Degenerate and bad inputs to the iterative engines (``register``, ``demons``): each case either
raises a clear error (type and the key words of its message) or returns a correct, finite result.

The table covers every engine case of issue 11: images that require a gradient on a multi-level
pyramid, identical images (the best iterate is returned, never one worse than the start), NCC on a
constant image (a truthful message, or a finite identity result once NCC's gradient is finite), a
volume with an axis of one voxel, degenerate parameters of ``demons`` and ``register``, and arguments
on different devices.
"""

from __future__ import annotations

import math

import pytest
import torch

import regedu
import regedu.data as data
from regedu.registration import demons, register

FAST = dict(progress=False, iterations=4)


@pytest.fixture(scope="module")
def slice2d() -> torch.Tensor:
    """A real 2D brain slice (96 x 80, 2 mm), intensities in [0, 1]."""
    return data.brain_slice(resolution=2).image


@pytest.fixture(scope="module")
def small() -> torch.Tensor:
    """A small smooth random image (40 x 36)."""
    g = torch.Generator().manual_seed(0)
    return regedu.filters.gaussian_blur(torch.rand(1, 1, 40, 36, generator=g), 2.0)


def _raises(exc: type[Exception], pattern: str):
    def check(call):
        with pytest.raises(exc, match=pattern):
            call()
    return check


# (id, call(slice2d, small) -> anything, expectation(call)); the calls are lambdas so that a table entry
# is one line a reader can scan
ERRORS = [
    ("demons iterations=-1", lambda s, m: demons(m, m, iterations=-1, progress=False),
     _raises(ValueError, r"demons: iterations must be >= 0, got -1")),
    ("demons iterations=2.5", lambda s, m: demons(m, m, iterations=2.5, progress=False),
     _raises(ValueError, r"demons: iterations must be an integer, got 2.5")),
    ("demons levels=0", lambda s, m: demons(m, m, levels=0, progress=False),
     _raises(ValueError, r"demons: levels must be >= 1, got 0")),
    ("demons sigma_fluid=-1", lambda s, m: demons(m, m, sigma_fluid=-1.0, progress=False),
     _raises(ValueError, r"demons: sigma_fluid must be >= 0, got -1")),
    ("demons sigma_diffusion=nan", lambda s, m: demons(m, m, sigma_diffusion=math.nan, progress=False),
     _raises(ValueError, r"demons: sigma_diffusion must be a finite number, got nan")),
    ("demons max_step=0", lambda s, m: demons(m, m, max_step=0.0, progress=False),
     _raises(ValueError, r"demons: max_step must be > 0, got 0")),
    ("demons two channels", lambda s, m: demons(m.expand(1, 2, -1, -1), m.expand(1, 2, -1, -1), progress=False),
     _raises(ValueError, r"demons: fixed and moving must have 1 channel\(s\), got 2 and 2")),
    ("demons snapshot_every=-1", lambda s, m: demons(m, m, snapshot_every=-1, progress=False),
     _raises(ValueError, r"demons: snapshot_every must be a non-negative integer, got -1")),
    ("register iterations=-1", lambda s, m: register(m, m, iterations=-1, progress=False),
     _raises(ValueError, r"register: iterations must be >= 0, got -1")),
    ("register levels=0", lambda s, m: register(m, m, levels=0, progress=False),
     _raises(ValueError, r"register: levels must be >= 1, got 0")),
    ("register levels=True", lambda s, m: register(m, m, levels=True, progress=False),
     _raises(TypeError, r"register: levels must be an integer, got True")),
    ("register lr=nan", lambda s, m: register(m, m, lr=math.nan, progress=False),
     _raises(ValueError, r"register: lr must be a positive finite number")),
    ("register lr=0", lambda s, m: register(m, m, lr=0.0, progress=False),
     _raises(ValueError, r"register: lr must be a positive finite number")),
    ("register weight=nan", lambda s, m: register(m, m, transform="dense", weight=math.nan, progress=False),
     _raises(ValueError, r"register: weight must be a finite number >= 0, got nan")),
    ("register weight=-1", lambda s, m: register(m, m, transform="dense", weight=-1.0, progress=False),
     _raises(ValueError, r"register: weight must be a finite number >= 0, got -1")),
    ("register snapshot_every=-2", lambda s, m: register(m, m, snapshot_every=-2, progress=False),
     _raises(ValueError, r"register: snapshot_every must be a non-negative integer, got -2")),
    ("register callback=3", lambda s, m: register(m, m, callback=3, progress=False),
     _raises(TypeError, r"register: callback must be callable")),
    ("register moving on another device", lambda s, m: register(m, m.to("meta"), progress=False),
     _raises(ValueError, r"register: fixed and moving must be on the same device, got fixed on cpu and moving on meta")),
    ("register mask on another device", lambda s, m: register(m, m, mask=torch.ones_like(m).to("meta"), progress=False),
     _raises(ValueError, r"register: fixed and mask must be on the same device, got fixed on cpu and mask on meta")),
    ("demons moving on another device", lambda s, m: demons(m, m.to("meta"), progress=False),
     _raises(ValueError, r"demons: fixed and moving must be on the same device, got fixed on cpu and moving on meta")),
    ("register negative mask", lambda s, m: register(m, m, mask=-torch.ones_like(m), progress=False),
     _raises(ValueError, r"register: mask must be non-negative \(a 0/1 mask or weights\), got a minimum of -1")),
    ("register two-channel mask", lambda s, m: register(m, m, mask=torch.ones(1, 2, *m.shape[2:]), progress=False),
     _raises(ValueError, r"register: mask must have one channel")),
    ("bspline on a volume with one slice", lambda s, m: register(m[:, :, None], m[:, :, None], transform="bspline", progress=False),
     _raises(ValueError, r"BSplineModel: every axis needs at least 2 voxels.*register a single slice as a 2D image")),
    ("a loss that is NaN from the start", lambda s, m: register(m, m, similarity=lambda f, x, mask=None: (f - x).sum() * math.nan, **FAST),
     _raises(FloatingPointError, r"the loss became nan at level 0, iteration 0.*not defined for these images at the identity")),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_bad_input_gets_a_clear_error(case, slice2d, small):
    _, call, expect = case
    expect(lambda: call(slice2d, small))


def test_a_loss_that_becomes_nan_later_suggests_a_smaller_lr(small):
    calls = []

    def loss(f, m, mask=None):
        calls.append(1)
        value = (f - m).pow(2).mean()
        return value if len(calls) < 3 else value * math.nan

    with pytest.raises(FloatingPointError, match=r"the loss became nan at level 0, iteration 2 .*try a smaller lr"):
        register(small, small.roll(2, -1), similarity=loss, levels=1, **FAST)


@pytest.mark.parametrize("which", ["fixed", "moving"])
@pytest.mark.parametrize("transform", ["rigid", "bspline"])
def test_images_that_require_grad_register_on_a_multilevel_pyramid(slice2d, which, transform):
    f, m = slice2d.clone(), slice2d.roll(2, -1).clone()
    (f if which == "fixed" else m).requires_grad_(True)
    result = register(f, m, transform=transform, levels=2, iterations=(5, 5), progress=False)
    assert not result.dvf.requires_grad and torch.isfinite(result.dvf).all()
    assert result.final_loss < result.history["loss"][0]  # it did register


@pytest.mark.parametrize("transform", ["translation", "rigid", "affine", "bspline", "dense", "svf"])
def test_identical_images_give_the_identity_and_never_a_worse_loss(slice2d, transform):
    """Issue 11: rigid/affine on identical slices ended 0.1-0.2 voxels away with a loss above the start."""
    img = slice2d
    result = register(img, img.clone(), transform=transform, similarity="mse", progress=False)
    start = float(regedu.mse(img, img))  # 0: the identity is optimal
    assert result.dvf.abs().max() < 1e-3, f"{transform}: {float(result.dvf.abs().max())} voxels away from the identity"
    assert result.loss is not None and result.loss <= start + 1e-6
    if result.matrix is not None:
        assert torch.allclose(result.matrix[0], torch.eye(3), atol=1e-5)
    # with the default similarity (LNCC, whose epsilon makes a tiny shift score marginally better than the
    # identity) the returned loss is still never above the loss at the start
    result = register(img, img.clone(), transform=transform, progress=False)
    assert result.loss <= float(regedu.similarity.lncc_loss(img, img)) + 1e-5  # float32 resampling round-off


def test_the_returned_transformation_is_the_best_one_evaluated(slice2d):
    """A huge Adam rate makes the last iterate bad; the result is the best point and no worse than the start."""
    moving = regedu.affine_warp(slice2d, regedu.transforms.translation_matrix(torch.tensor([1.5, -1.0])))
    result = register(slice2d, moving, transform="affine", similarity="mse", lr=0.5, levels=1, iterations=30, progress=False)
    start = float(regedu.mse(slice2d, moving))
    assert result.loss <= min(result.history["loss"]) + 1e-7
    assert result.loss <= start
    assert float(regedu.mse(slice2d, result.moved)) == pytest.approx(result.loss, rel=1e-4, abs=1e-7)


def test_ncc_on_a_constant_image_is_finite_or_says_why():
    """A constant image has no contrast: NCC's value is defined by convention, its gradient was NaN. The engine
    either returns the identity (a finite gradient) or names the real cause, never the affine matrix or the rate."""
    c = torch.full((1, 1, 40, 40), 0.5)
    for transform in ("rigid", "affine", "bspline"):
        try:
            result = register(c, c, transform=transform, similarity="ncc", **FAST)
        except FloatingPointError as err:
            message = str(err)
            assert "constant" in message and "ncc" in message, message
            assert "matrix" not in message and "smaller lr" not in message, message
        else:
            assert torch.isfinite(result.dvf).all() and result.dvf.abs().max() < 1e-3


def test_dense_registration_of_a_volume_with_one_slice(small):
    """A (1, 1, 1, H, W) volume: the pyramid keeps the axis of one voxel, the regulariser is finite."""
    fixed = small[:, :, None]
    moving = small.roll(1, -1)[:, :, None]
    result = register(fixed, moving, transform="dense", levels=2, iterations=(10, 10), progress=False)
    assert result.dvf.shape == (1, 3, 1, 40, 36)
    assert torch.isfinite(result.dvf).all()
    assert result.loss < float(regedu.mse(fixed, moving))


def test_pyramid_keeps_an_axis_of_one_voxel():
    from regedu.registration.planning import level_shapes, max_levels

    assert level_shapes((1, 65, 49), 3) == [(1, 17, 13), (1, 33, 25), (1, 65, 49)]
    assert max_levels((1, 64, 64), coarsest=16) == 3


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float64])
def test_image_dtypes_follow_the_policy(small, dtype):
    """Integer images are promoted to float32, half precision is optimised in float32 and the moved image
    comes back in the input dtype, float64 stays float64."""
    scale = 255 if dtype == torch.uint8 else 1
    f = (small * scale).to(dtype)
    m = (small.roll(1, -1) * scale).to(dtype)
    result = register(f, m, transform="translation", **FAST)
    assert torch.isfinite(result.dvf).all()
    expected = {torch.uint8: torch.float32, torch.float16: torch.float16, torch.float64: torch.float64}[dtype]
    assert result.moved.dtype == expected
    assert result.dvf.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


def test_register_inside_no_grad_and_demons_zero_iterations(small):
    with torch.no_grad():
        result = register(small, small.roll(1, -1), transform="translation", **FAST)
    assert result.loss < float(regedu.mse(small, small.roll(1, -1)))
    out = demons(small, small.roll(1, -1), iterations=0, progress=False)
    assert torch.equal(out.dvf, torch.zeros_like(out.dvf)) and out.history["loss"] == []
