"""Property tests (hypothesis): for random dtypes, shapes, intensities and masks the similarity measures
are finite and within their documented range, and warping in half precision agrees with float32 within
half precision's resolution."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import regedu

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.bool]


@st.composite
def image_pairs(draw, max_side=20):
    """(fixed, moving, mask or None): 2D or 3D, batch 1-2, intensities of a random dtype and range."""
    ndim = draw(st.sampled_from([2, 3]))
    side = max_side if ndim == 2 else 9
    shape = tuple(draw(st.integers(4, side)) for _ in range(ndim))
    batch = draw(st.integers(1, 2))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    kind = draw(st.sampled_from(["random", "constant", "related"]))
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(batch, 1, *shape, generator=g, dtype=torch.float64)
    m = torch.rand(batch, 1, *shape, generator=g, dtype=torch.float64)
    if kind == "constant":
        m = torch.full_like(m, 0.7)
    elif kind == "related":
        m = 1 - f + 0.05 * m
    scale = 255.0 if dtype == torch.uint8 else draw(st.sampled_from([1.0, 100.0]))

    def cast(x):
        if dtype == torch.bool:
            return x > 0.5
        if dtype == torch.uint8:
            return (x * scale).round().to(torch.uint8)
        return (x * scale).to(dtype)

    mask = None
    if draw(st.booleans()):
        mask = torch.rand(batch, 1, *shape, generator=g) > draw(st.floats(0.0, 0.8))
        mask.view(batch, -1)[:, 0] = True  # never all zero (that is an error, tested elsewhere)
        if draw(st.booleans()):
            mask = mask.float()
    return cast(f), cast(m), mask


def _finite_scalar(v: torch.Tensor) -> float:
    assert v.dim() == 0
    value = float(v.double())
    assert math.isfinite(value)
    return value


@SETTINGS
@given(image_pairs())
def test_ssd_and_mse_are_finite_and_non_negative(pair):
    f, m, mask = pair
    assert _finite_scalar(regedu.mse(f, m, mask)) >= 0
    assert _finite_scalar(regedu.ssd(f, m, mask)) >= 0
    # identical images: exactly zero
    assert _finite_scalar(regedu.mse(f, f, mask)) == 0.0


@SETTINGS
@given(image_pairs())
def test_ncc_is_finite_and_within_minus_one_and_one(pair):
    f, m, mask = pair
    assert -1.0 <= _finite_scalar(regedu.ncc(f, m, mask)) <= 1.0


@SETTINGS
@given(image_pairs(), st.sampled_from([3, 5]), st.sampled_from(["zeros", "inside"]))
def test_lncc_is_finite_and_within_zero_and_one(pair, window, border):
    f, m, mask = pair
    assert 0.0 <= _finite_scalar(regedu.lncc(f, m, mask, window=window, border=border)) <= 1.0


@SETTINGS
@given(image_pairs(), st.sampled_from([8, 16, 32]))
def test_mutual_information_is_finite_and_within_zero_and_log_bins(pair, bins):
    f, m, mask = pair
    mi = _finite_scalar(regedu.mutual_information(f, m, mask, bins=bins))
    slack = 1e-5
    assert -slack <= mi <= math.log(bins) + slack
    nmi = _finite_scalar(regedu.mutual_information(f, m, mask, bins=bins, normalised=True))
    assert 1.0 - slack <= nmi <= 2.0 + slack


@SETTINGS
@given(image_pairs())
def test_similarities_return_the_dtype_of_the_policy(pair):
    f, m, mask = pair
    expected = torch.float64 if f.dtype == torch.float64 else torch.float32  # measures of half/int/bool: float32
    for fn in (regedu.mse, regedu.ssd, regedu.ncc, regedu.lncc, regedu.mutual_information):
        assert fn(f, m, mask).dtype == expected


@SETTINGS
@given(
    st.sampled_from([(32, 40), (64, 64), (12, 14, 16)]),
    st.sampled_from([torch.float16, torch.bfloat16]),
    st.floats(0.5, 8.0),
    st.integers(0, 2**16),
    st.sampled_from(["border", "zeros"]),
)
def test_half_precision_warp_agrees_with_float32(shape, dtype, max_disp, seed, padding_mode):
    """The grid is built in float32 whatever the image's dtype, so the only error left is the rounding
    of the inputs and of the result to half precision: within a few units in the last place of values in
    [0, 1] (2^-8 for bfloat16, 2^-11 for float16)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 1, *shape, generator=g)
    dvf = regedu.random_dvf(shape, max_disp, 3.0, seed=seed)
    ref = regedu.warp(image.to(dtype).float(), dvf.to(dtype).float(), padding_mode=padding_mode)
    out = regedu.warp(image.to(dtype), dvf.to(dtype), padding_mode=padding_mode)
    assert out.dtype == dtype
    eps = torch.finfo(dtype).eps  # spacing of values in [1, 2)
    assert (out.float() - ref).abs().max().item() <= eps


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_warp_on_a_large_image_stays_accurate(dtype):
    """Issue 11: a half-precision grid gave errors of ~0.1 at 128x128 and NaNs at 256x256."""
    image = torch.rand(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    dvf = regedu.random_dvf((256, 256), 5.0, 8.0, seed=0)
    out = regedu.warp(image.to(dtype), dvf.to(dtype))
    ref = regedu.warp(image.to(dtype).float(), dvf.to(dtype).float())
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max().item() <= torch.finfo(dtype).eps
