"""Bad and degenerate inputs for the core library (warping, resampling, fields, similarity, overlap and
landmarks, regularisers, transforms, utilities): each case either raises a clear error (its type and the
key words of its message: the function, the argument, what was expected, what was given) or returns the
correct, finite value. Issue 11's cases for these modules are all here.
"""

from __future__ import annotations

import re

import pytest
import torch

import regedu
from regedu import fields, resampling
from regedu import transforms as T
from regedu._checks import check_keywords, check_number
from regedu.utils import cpu_threads

NAN, INF = float("nan"), float("inf")


def img(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = regedu.filters.gaussian_blur(torch.rand(*shape, generator=g, dtype=torch.float64), 1.5)
    x = (x - x.amin()) / (x.amax() - x.amin())
    return x.to(dtype)


def zeros_dvf(*spatial, batch=1):
    return torch.zeros(batch, len(spatial), *spatial)


def with_value(x, index, value):
    x = x.clone()
    x[index] = value
    return x


def meta(x):
    return x.to("meta")


A2 = T.rigid_matrix(torch.tensor([0.2, 1.0, -1.0]), center=[7.5, 7.5])

# --------------------------------------------------------------------------------------------
# errors: (id, call, exception type, regular expression the message must match)
# --------------------------------------------------------------------------------------------

ERRORS = [
    # warping
    ("warp-list", lambda: regedu.warp([[0.0]], zeros_dvf(4, 4)), TypeError, r"warp: image must be a torch.Tensor, got list"),
    ("warp-empty-batch", lambda: regedu.warp(torch.rand(0, 1, 8, 8), zeros_dvf(8, 8, batch=0)), ValueError,
     r"warp: image is empty \(shape \(0, 1, 8, 8\)\)"),
    ("warp-empty-axis", lambda: regedu.warp(torch.rand(1, 1, 0, 8), torch.zeros(1, 2, 0, 8)), ValueError, r"warp: image is empty"),
    ("warp-bicubic-3d", lambda: regedu.warp(torch.rand(1, 1, 4, 4, 4), zeros_dvf(4, 4, 4), mode="bicubic"), ValueError,
     r"warp: mode 'bicubic' is only available in 2D"),
    ("warp-int-linear", lambda: regedu.warp(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), zeros_dvf(8, 8)), TypeError,
     r"warp: an integer image \(torch.uint8\) can only be warped with mode='nearest'"),
    ("warp-int-dvf", lambda: regedu.warp(torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8, 8, dtype=torch.long)), TypeError,
     r"warp: dvf must be a floating-point tensor, got dtype torch.int64"),
    ("warp-inf-dvf", lambda: regedu.warp(torch.rand(1, 1, 8, 8), with_value(zeros_dvf(8, 8), (0, 1, 2, 2), INF)), ValueError,
     r"warp: dvf contains 0 NaN and 1 infinite values"),
    ("warp-nan-image", lambda: regedu.warp(with_value(torch.rand(1, 1, 8, 8), (0, 0, 1, 1), NAN), zeros_dvf(8, 8)), ValueError,
     r"warp: image contains 1 NaN and 0 infinite values"),
    ("warp-nan-dvf-zeros-padding", lambda: regedu.warp(torch.rand(1, 1, 8, 8), with_value(zeros_dvf(8, 8), (0, 0, 3, 3), NAN),
                                                       padding_mode="zeros"), ValueError, r"warp: dvf contains 1 NaN"),
    ("warp-device-mismatch", lambda: regedu.warp(torch.rand(1, 1, 8, 8), meta(zeros_dvf(8, 8))), ValueError,
     r"warp: image and dvf must be on the same device, got image on cpu and dvf on meta"),
    ("warp-channels-of-dvf", lambda: regedu.warp(torch.rand(1, 1, 8, 8, 8), torch.zeros(1, 2, 8, 8, 8)), ValueError,
     r"warp: dvf must have 3 channels .*got shape \(1, 2, 8, 8, 8\) with 2 channels"),
    ("warp_labels-two-channels", lambda: regedu.warp_labels(torch.zeros(1, 2, 8, 8, dtype=torch.long), zeros_dvf(8, 8)), ValueError,
     r"warp_labels: labels must have one channel of class indices, got shape \(1, 2, 8, 8\)"),
    ("warp_labels-negative-linear", lambda: regedu.warp_labels(-torch.ones(1, 1, 8, 8, dtype=torch.long), zeros_dvf(8, 8), mode="linear"),
     ValueError, r"warp_labels: mode='linear' needs non-negative class indices"),
    ("affine_warp-3x4", lambda: regedu.affine_warp(torch.rand(1, 1, 8, 8), torch.zeros(3, 4)), ValueError,
     r"affine_warp: A must be a homogeneous affine matrix of shape \(3, 3\) or \(4, 4\).*got shape \(3, 4\)"),
    ("affine_warp-nan", lambda: regedu.affine_warp(torch.rand(1, 1, 8, 8), with_value(torch.eye(3), (0, 2), NAN)), ValueError,
     r"affine_warp: A contains 1 NaN and 0 infinite values"),
    ("affine_warp-2d-matrix-3d-image", lambda: regedu.affine_warp(torch.rand(1, 1, 4, 4, 4), torch.eye(3)), ValueError,
     r"affine_warp: A must be \(4, 4\) for 3D images, got shape \(3, 3\)"),
    ("affine_warp-shape-length", lambda: regedu.affine_warp(torch.rand(1, 1, 8, 8), torch.eye(3), shape=(8, 8, 8)), ValueError,
     r"affine_warp: shape must have 2 positive entries for a 2D image, got \(8, 8, 8\)"),
    ("affine_warp-int-linear", lambda: regedu.affine_warp(torch.zeros(1, 1, 8, 8, dtype=torch.int32), torch.eye(3)), TypeError,
     r"affine_warp: an integer image \(torch.int32\) can only be warped with mode='nearest'"),
    ("affine_warp-batch", lambda: regedu.affine_warp(torch.rand(2, 1, 8, 8), torch.eye(3).expand(3, 3, 3)), ValueError,
     r"affine_warp: image and A must have the same batch size \(or one of them 1\), got 2 and 3"),
    ("affine_warp-device", lambda: regedu.affine_warp(torch.rand(1, 1, 8, 8), meta(torch.eye(3))), ValueError,
     r"affine_warp: image and A must be on the same device, got image on cpu and A on meta"),
    ("identity_grid-1d", lambda: regedu.identity_grid((4,)), ValueError, r"identity_grid: shape must have 2 or 3 positive entries, got \(4,\)"),
    # resampling
    ("resize-negative-scale", lambda: regedu.resize(torch.rand(1, 1, 8, 8), scale=-1), ValueError, r"resize: scale must be > 0, got -1"),
    ("resize-nan-scale", lambda: regedu.resize(torch.rand(1, 1, 8, 8), scale=NAN), ValueError, r"resize: scale must be a finite number, got nan"),
    ("resize-shape-and-scale", lambda: regedu.resize(torch.rand(1, 1, 8, 8), shape=(4, 4), scale=0.5), ValueError,
     r"resize: give exactly one of shape and scale"),
    ("resize-zero-size", lambda: regedu.resize(torch.rand(1, 1, 8, 8), shape=(0, 4)), ValueError,
     r"resize: shape must have 2 positive entries for a 2D image, got \(0, 4\)"),
    ("resize-int-linear", lambda: regedu.resize(torch.zeros(1, 1, 8, 8, dtype=torch.long), shape=(4, 4)), TypeError,
     r"resize: an integer image \(torch.int64\) can only be resized with mode='nearest'"),
    ("resize_dvf-shape-length", lambda: regedu.resize_dvf(zeros_dvf(8, 8), (4, 4, 4)), ValueError,
     r"resize_dvf: shape must have 2 positive entries for a 2D field, got \(4, 4, 4\)"),
    ("image_pyramid-levels-0", lambda: regedu.image_pyramid(torch.rand(1, 1, 16, 16), 0), ValueError, r"image_pyramid: levels must be >= 1, got 0"),
    ("image_pyramid-levels-float", lambda: regedu.image_pyramid(torch.rand(1, 1, 16, 16), 1.5), ValueError,
     r"image_pyramid: levels must be an integer, got 1.5"),
    ("image_pyramid-factor-1", lambda: regedu.image_pyramid(torch.rand(1, 1, 16, 16), 2, factor=1.0), ValueError,
     r"image_pyramid: factor must be > 1, got 1.0"),
    ("coarse_shape-factor-0", lambda: resampling.coarse_shape((8, 8), 0), ValueError, r"coarse_shape: factor must be > 0, got 0"),
    # fields
    ("random_dvf-nan-max", lambda: regedu.random_dvf((16, 16), max_displacement=NAN), ValueError,
     r"random_dvf: max_displacement must be a finite number, got nan"),
    ("random_dvf-negative-max", lambda: regedu.random_dvf((16, 16), max_displacement=-1.0), ValueError,
     r"random_dvf: max_displacement must be >= 0, got -1.0"),
    ("random_dvf-zero-smoothness", lambda: regedu.random_dvf((16, 16), smoothness=0.0), ValueError, r"random_dvf: smoothness must be > 0, got 0.0"),
    ("random_dvf-batch-0", lambda: regedu.random_dvf((16, 16), batch=0), ValueError, r"random_dvf: batch must be >= 1, got 0"),
    ("random_dvf-axis-of-1", lambda: regedu.random_dvf((1, 16)), ValueError, r"random_dvf: shape must be 2 or 3 spatial sizes of at least 2"),
    ("random_bspline_dvf-inf-max", lambda: regedu.random_bspline_dvf((16, 16), spacing=4, max_displacement=INF), ValueError,
     r"random_bspline_dvf: max_displacement must be a finite number, got inf"),
    ("invert_dvf-negative-iterations", lambda: regedu.invert_dvf(zeros_dvf(8, 8), iterations=-1), ValueError,
     r"invert_dvf: iterations must be >= 0, got -1"),
    ("invert_dvf-float-iterations", lambda: regedu.invert_dvf(zeros_dvf(8, 8), iterations=2.5), ValueError,
     r"invert_dvf: iterations must be an integer, got 2.5"),
    ("integrate_velocity-negative-steps", lambda: regedu.integrate_velocity(zeros_dvf(8, 8), steps=-1), ValueError,
     r"integrate_velocity: steps must be a non-negative integer, got -1"),
    ("integrate_velocity-bool-steps", lambda: regedu.integrate_velocity(zeros_dvf(8, 8), steps=True), ValueError,
     r"integrate_velocity: steps must be a non-negative integer, got True"),
    ("compose-sizes", lambda: regedu.compose(zeros_dvf(8, 8), zeros_dvf(8, 9)), ValueError,
     r"compose: v has spatial size \(8, 9\), expected \(8, 8\)"),
    ("jacobian-axis-of-1", lambda: regedu.jacobian_determinant(torch.zeros(1, 2, 1, 8)), ValueError,
     r"every spatial size must be at least 2, got \(1, 8\)"),
    ("bspline_weights-zero-spacing", lambda: fields.bspline_weights(16, 0.0), ValueError, r"bspline_weights: spacing must be > 0, got 0.0"),
    ("scale_to_max-negative", lambda: fields.scale_to_max(zeros_dvf(4, 4), -1.0), ValueError,
     r"scale_to_max: max_length must be one finite number >= 0 or one per field \(1\), got -1.0"),
    # similarity: channels, batch, masks, devices, options
    ("mse-channel-broadcast", lambda: regedu.mse(img(1, 1, 8, 8), img(1, 3, 8, 8)), ValueError,
     r"mse: fixed and moving must have the same number of channels, got fixed \(1, 1, 8, 8\) with 1 and moving \(1, 3, 8, 8\) with 3"),
    ("ssd-channel-broadcast", lambda: regedu.ssd(img(1, 3, 8, 8), img(1, 1, 8, 8)), ValueError, r"ssd: fixed and moving must have the same number of channels"),
    ("ncc-channel-broadcast", lambda: regedu.ncc(img(1, 1, 8, 8), img(1, 3, 8, 8)), ValueError, r"ncc: fixed and moving must have the same number of channels"),
    ("lncc-channel-broadcast", lambda: regedu.lncc(img(1, 1, 12, 12), img(1, 3, 12, 12)), ValueError, r"lncc: fixed and moving must have the same number of channels"),
    ("ssd-two-channel-mask", lambda: regedu.ssd(img(1, 1, 8, 8), img(1, 1, 8, 8), mask=torch.ones(1, 2, 8, 8)), ValueError,
     r"ssd: mask must have 1 channel or as many as the image \(1\), got shape \(1, 2, 8, 8\)"),
    ("mse-all-zero-mask", lambda: regedu.mse(img(1, 1, 8, 8), img(1, 1, 8, 8, seed=1), mask=torch.zeros(1, 1, 8, 8)), ValueError,
     r"mse: mask is empty \(all zero\) for batch element\(s\) \[0\]; nothing to compare"),
    ("ncc-all-zero-mask-one-element", lambda: regedu.ncc(img(2, 1, 8, 8), img(2, 1, 8, 8, seed=1),
                                                         mask=torch.stack([torch.ones(1, 8, 8), torch.zeros(1, 8, 8)])), ValueError,
     r"ncc: mask is empty \(all zero\) for batch element\(s\) \[1\]"),
    ("lncc-all-zero-bool-mask", lambda: regedu.lncc(img(1, 1, 12, 12), img(1, 1, 12, 12), mask=torch.zeros(1, 1, 12, 12, dtype=torch.bool)),
     ValueError, r"lncc: mask is empty \(all zero\)"),
    ("mi-all-zero-mask", lambda: regedu.mutual_information(img(1, 1, 8, 8), img(1, 1, 8, 8), mask=torch.zeros(1, 1, 8, 8)), ValueError,
     r"mutual_information: mask is empty \(all zero\)"),
    ("mse-negative-mask", lambda: regedu.mse(img(1, 1, 8, 8), img(1, 1, 8, 8), mask=-torch.ones(1, 1, 8, 8)), ValueError,
     r"mse: mask must be non-negative"),
    ("mse-mask-size", lambda: regedu.mse(img(1, 1, 8, 8), img(1, 1, 8, 8), mask=torch.ones(1, 1, 8, 7)), ValueError,
     r"mse: image and mask must have the same spatial size, got image \(8, 8\) and mask \(8, 7\)"),
    ("mse-device", lambda: regedu.mse(img(1, 1, 8, 8), meta(img(1, 1, 8, 8))), ValueError,
     r"mse: fixed and moving must be on the same device, got fixed on cpu and moving on meta"),
    ("mse-batch", lambda: regedu.mse(img(2, 1, 8, 8), img(3, 1, 8, 8)), ValueError,
     r"mse: fixed and moving must have the same batch size \(or one of them 1\), got 2 and 3"),
    ("lncc-even-window", lambda: regedu.lncc(img(1, 1, 12, 12), img(1, 1, 12, 12), window=4), ValueError,
     r"lncc: window must be a positive odd integer, got 4"),
    ("lncc-border-option", lambda: regedu.lncc(img(1, 1, 12, 12), img(1, 1, 12, 12), border="reflect"), ValueError,
     r"lncc: border must be one of 'zeros', 'inside', got 'reflect'"),
    ("mi-bins", lambda: regedu.mutual_information(img(1, 1, 8, 8), img(1, 1, 8, 8), bins=2), ValueError,
     r"mutual_information: bins must be an integer >= 4, got 2"),
    ("mi-channels", lambda: regedu.mutual_information(img(1, 3, 8, 8), img(1, 3, 8, 8)), ValueError,
     r"mutual_information: fixed and moving must have one channel, got 3 and 3"),
    ("mi-value-range", lambda: regedu.mutual_information(img(1, 1, 8, 8), img(1, 1, 8, 8), value_range=(1.0, 1.0)), ValueError,
     r"mutual_information: value_range must be \(low, high\) with high > low"),
    ("mi-nan", lambda: regedu.mutual_information(with_value(img(1, 1, 8, 8), (0, 0, 2, 2), NAN), img(1, 1, 8, 8)), ValueError,
     r"^mutual_information: fixed contains 1 NaN and 0 infinite values; expected finite numbers$"),
    ("soft_dice-channels", lambda: regedu.soft_dice(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8)), ValueError,
     r"soft_dice: probs_a and probs_b must have the same number of channels"),
    # overlap and landmarks
    ("dice-nan-labels", lambda: regedu.dice(with_value(torch.ones(1, 1, 8, 8), (0, 0, 1, 1), NAN), torch.ones(1, 1, 8, 8)), ValueError,
     r"dice: labels_a contains 1 NaN"),
    ("dice-two-channels", lambda: regedu.dice(torch.ones(1, 2, 8, 8, dtype=torch.long), torch.ones(1, 2, 8, 8, dtype=torch.long)), ValueError,
     r"dice: label maps must have one channel of class indices"),
    ("dice-background-only", lambda: regedu.dice(torch.zeros(1, 1, 8, 8, dtype=torch.long), torch.zeros(1, 1, 8, 8, dtype=torch.long)),
     ValueError, r"dice: both label maps are all background"),
    ("tre-shapes", lambda: regedu.target_registration_error(torch.zeros(4, 2), torch.zeros(5, 2), torch.eye(3)), ValueError,
     r"target_registration_error: fixed_points and moving_points must have the same shape, got \(4, 2\) and \(5, 2\)"),
    ("tre-no-points", lambda: regedu.target_registration_error(torch.zeros(0, 2), torch.zeros(0, 2), torch.eye(3)), ValueError,
     r"target_registration_error: points must be \(N, ndim\) or \(B, N, ndim\) with ndim 2 or 3 and N >= 1"),
    ("tre-nan-points", lambda: regedu.target_registration_error(with_value(torch.zeros(3, 2), (1, 0), NAN), torch.zeros(3, 2), torch.eye(3)),
     ValueError, r"target_registration_error: fixed_points contains 1 NaN"),
    ("tre-spacing", lambda: regedu.target_registration_error(torch.zeros(3, 2), torch.zeros(3, 2), torch.eye(3), spacing=(1.0, -1.0)),
     ValueError, r"target_registration_error: spacing must be 2 positive finite numbers"),
    ("tre-device", lambda: regedu.target_registration_error(torch.zeros(3, 2), torch.zeros(3, 2), meta(torch.eye(3))), ValueError,
     r"target_registration_error: fixed_points and transform must be on the same device, got fixed_points on cpu and transform on meta"),
    # regularisers
    ("diffusion-channels", lambda: regedu.diffusion(torch.zeros(1, 3, 8, 8)), ValueError, r"diffusion: dvf must have 2 channels"),
    ("bending-reduction", lambda: regedu.bending_energy(zeros_dvf(8, 8), reduction="sum"), ValueError,
     r"bending_energy: reduction must be one of 'mean', 'none', got 'sum'"),
    ("get_regulariser-unknown", lambda: regedu.regularisers.get_regulariser("tv"), ValueError, r"get_regulariser: regulariser must be one of"),
    # transforms
    ("rotation_matrix_3d-two-angles", lambda: T.rotation_matrix_3d([0.1, 0.2]), ValueError,
     r"rotation_matrix_3d: angles must have 3 entries \(one per spatial axis\), got shape \(2,\)"),
    ("affine_params-reflection", lambda: T.affine_params(torch.diag(torch.tensor([-1.0, 1.0, 1.0]))), ValueError,
     r"affine_params: the linear part of A must have a positive determinant"),
    ("compose_affines-2d-3d", lambda: T.compose_affines(torch.eye(3), torch.eye(4)), ValueError,
     r"compose_affines: matrices\[1\] is \(4, 4\) but matrices\[0\] is \(3, 3\)"),
    ("apply_affine-points", lambda: T.apply_affine(torch.eye(3), torch.zeros(4, 3)), ValueError,
     r"apply_affine: points must have 2 coordinates in the last dimension, got shape \(4, 3\)"),
    ("theta_to_affine-shape", lambda: T.theta_to_affine(torch.zeros(1, 3, 4), (8, 8)), ValueError,
     r"theta_to_affine: theta must have shape \(B, 2, 3\) for 2D"),
    # utilities
    ("cpu_threads-zero", lambda: cpu_threads(0).__enter__(), ValueError, r"cpu_threads: n must be a positive integer or None, got 0"),
    ("check_keywords-typo", lambda: check_keywords("train", {"val_evry": 1}, ["val_every", "epochs"]), TypeError,
     r"train: unknown keyword argument 'val_evry' \(did you mean 'val_every'\?\); the valid ones are epochs, val_every"),
    ("check_number-bool", lambda: check_number("f", "iterations", True, integer=True), TypeError, r"f: iterations must be an integer, got True"),
]


@pytest.mark.parametrize("call,error,pattern", [pytest.param(c, e, p, id=i) for i, c, e, p in ERRORS])
def test_bad_input_gives_a_clear_error(call, error, pattern):
    with pytest.raises(error) as info:
        call()
    assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} does not match {pattern!r}"


# --------------------------------------------------------------------------------------------
# degenerate but legal inputs: (id, call returning the checks' inputs, check)
# --------------------------------------------------------------------------------------------

def close(a, b, atol):
    return torch.allclose(a.double(), b.double(), atol=atol)


def _warp_half(dtype):
    x = img(1, 2, 128, 128)
    u = regedu.random_dvf((128, 128), 6.0, 8.0, seed=1)
    out = regedu.warp(x.to(dtype), u.to(dtype))
    ref = regedu.warp(x.to(dtype).float(), u.to(dtype).float())  # the same inputs, sampled in float32
    return out.dtype == dtype and close(out, ref, 1e-2)


def _warp_huge_displacement():
    x = img(1, 1, 16, 16)
    out = regedu.warp(x, torch.full((1, 2, 16, 16), 1e6))
    return bool(torch.isfinite(out).all()) and close(out, x[..., -1:, -1:].expand_as(out), 1e-6)  # the far corner (border)


def _int_labels_exact():
    big = 2**31 + 5
    lab = torch.tensor([[0, big], [7, 3]], dtype=torch.int64).repeat(4, 4)[None, None]
    u = torch.zeros(1, 2, 8, 8)
    u[:, 1] = 1.0  # one voxel along axis 1: pull back from the right neighbour
    out = regedu.warp_labels(lab, u)
    return out.dtype == torch.int64 and torch.equal(out[..., :-1], lab[..., 1:])


def _similarity_same_as_float(fn, dtype, **kw):
    a, b = img(1, 1, 24, 24, seed=0), img(1, 1, 24, 24, seed=1)
    if dtype == torch.uint8:
        a8, b8 = (a * 255).round().to(torch.uint8), (b * 255).round().to(torch.uint8)
        value, ref = fn(a8, b8, **kw), fn(a8.float(), b8.float(), **kw)
        return value.dtype == torch.float32 and bool(torch.isfinite(value)) and close(value, ref, 1e-5 * max(1.0, abs(float(ref))))
    if dtype == torch.bool:
        ab, bb = a > 0.5, b > 0.5
        value, ref = fn(ab, bb, **kw), fn(ab.float(), bb.float(), **kw)
        return value.dtype == torch.float32 and close(value, ref, 1e-6)
    value, ref = fn(a.to(dtype), b.to(dtype), **kw), fn(a.to(dtype).float(), b.to(dtype).float(), **kw)
    return value.dtype == torch.float32 and bool(torch.isfinite(value)) and close(value, ref, 1e-2 * max(1.0, abs(float(ref))))


def _ncc_constant_image_gradient():
    fixed = img(1, 1, 16, 16)
    moving = torch.full((1, 1, 16, 16), 0.5, requires_grad=True)
    value = regedu.ncc(fixed, moving)
    value.backward()
    return float(value.detach()) == 0.0 and bool(torch.isfinite(moving.grad).all())


def _register_ncc_constant_image():
    const = torch.full((1, 1, 24, 24), 0.3)
    result = regedu.register(const, const, transform="rigid", similarity="ncc", levels=1, iterations=5)
    return bool(torch.isfinite(result.matrix).all()) and close(result.matrix[0] if result.matrix.dim() == 3 else result.matrix, torch.eye(3), 1e-6)


def _regulariser_degenerate(fn, shape):
    u = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    value = fn(u)
    value.backward()
    return bool(torch.isfinite(value)) and bool(torch.isfinite(u.grad).all())


def _diffusion_single_slice_is_in_plane():
    u = torch.randn(1, 3, 1, 8, 9, dtype=torch.float64)
    expected = sum((torch.diff(u, dim=d) ** 2).flatten(2).mean(2).sum(1) for d in (3, 4))
    return close(regedu.diffusion(u), expected.mean(), 1e-12)


def _tre_integer_points():
    p = torch.tensor([[1, 2], [3, 4]])
    q = p + torch.tensor([3, 4])
    value = regedu.target_registration_error(p, q, torch.eye(3))
    return value.dtype == torch.float32 and close(value, torch.tensor([5.0]), 1e-6)


def _pyramid_of_labels():
    lab = torch.randint(0, 4, (1, 1, 33, 33), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    pyr = regedu.image_pyramid(lab, 3)
    return [tuple(p.shape[2:]) for p in pyr] == [(9, 9), (17, 17), (33, 33)] and all(
        p.dtype == torch.uint8 and set(p.unique().tolist()) <= {0, 1, 2, 3} for p in pyr
    ) and torch.equal(pyr[1], lab[..., ::2, ::2])


VALUES = [
    ("warp-float16-vs-float32", lambda: _warp_half(torch.float16)),
    ("warp-bfloat16-vs-float32", lambda: _warp_half(torch.bfloat16)),
    ("warp-huge-displacement-border", _warp_huge_displacement),
    ("warp-int64-labels-beyond-2**31", _int_labels_exact),
    ("warp-uint8-nearest", lambda: (lambda x: torch.equal(regedu.warp(x, zeros_dvf(8, 8), mode="nearest"), x))(
        torch.arange(64, dtype=torch.uint8).reshape(1, 1, 8, 8))),
    ("affine_warp-float16", lambda: (lambda x: (lambda o: o.dtype == torch.float16 and close(o, regedu.affine_warp(x.float(), A2), 1e-2))(
        regedu.affine_warp(x, A2)))(img(1, 1, 16, 16).half())),
    ("resize-float16-keeps-dtype", lambda: regedu.resize(img(1, 1, 16, 16).half(), scale=0.5).dtype == torch.float16),
    ("resize_dvf-bfloat16-keeps-dtype", lambda: regedu.resize_dvf(zeros_dvf(16, 16).bfloat16(), (9, 9)).dtype == torch.bfloat16),
    ("image_pyramid-uint8-labels", _pyramid_of_labels),
    ("lncc-uint8", lambda: _similarity_same_as_float(regedu.lncc, torch.uint8)),
    ("lncc-float16", lambda: _similarity_same_as_float(regedu.lncc, torch.float16)),
    ("lncc-bfloat16", lambda: _similarity_same_as_float(regedu.lncc, torch.bfloat16)),
    ("mi-float16", lambda: _similarity_same_as_float(regedu.mutual_information, torch.float16)),
    ("mi-uint8", lambda: _similarity_same_as_float(regedu.mutual_information, torch.uint8)),
    ("mse-uint8", lambda: _similarity_same_as_float(regedu.mse, torch.uint8)),
    ("ssd-uint8", lambda: _similarity_same_as_float(regedu.ssd, torch.uint8)),
    ("ncc-uint8", lambda: _similarity_same_as_float(regedu.ncc, torch.uint8)),
    ("mse-bool", lambda: _similarity_same_as_float(regedu.mse, torch.bool)),
    ("ssd-bool", lambda: _similarity_same_as_float(regedu.ssd, torch.bool)),
    ("ncc-bool", lambda: _similarity_same_as_float(regedu.ncc, torch.bool)),
    ("ncc-float16", lambda: _similarity_same_as_float(regedu.ncc, torch.float16)),
    ("ssd-float16-no-overflow", lambda: (lambda v: v.dtype == torch.float32 and float(v) == pytest.approx(40 * 100.0**2, rel=1e-3))(
        regedu.ssd(torch.full((1, 1, 5, 8), 100.0, dtype=torch.float16), torch.zeros(1, 1, 5, 8, dtype=torch.float16)))),
    ("diffusion-float16-in-float32", lambda: regedu.diffusion(torch.randn(1, 2, 8, 8).half()).dtype == torch.float32),
    ("mse-bool-mask", lambda: close(regedu.mse(img(1, 1, 8, 8), img(1, 1, 8, 8, seed=1), mask=torch.ones(1, 1, 8, 8, dtype=torch.bool)),
                                    regedu.mse(img(1, 1, 8, 8), img(1, 1, 8, 8, seed=1)), 1e-7)),
    ("ncc-constant-image-zero-finite-gradient", _ncc_constant_image_gradient),
    ("register-ncc-constant-image", _register_ncc_constant_image),
    ("diffusion-axis-of-1-2d", lambda: _regulariser_degenerate(regedu.diffusion, (1, 2, 1, 8))),
    ("diffusion-axis-of-1-3d", lambda: _regulariser_degenerate(regedu.diffusion, (1, 3, 1, 8, 8))),
    ("bending-axis-of-1-3d", lambda: _regulariser_degenerate(regedu.bending_energy, (1, 3, 1, 8, 8))),
    ("bending-axes-of-2", lambda: _regulariser_degenerate(regedu.bending_energy, (1, 3, 2, 2, 8))),
    ("diffusion-single-slice-equals-in-plane", _diffusion_single_slice_is_in_plane),
    ("jacobian-zero-field-is-one", lambda: torch.equal(regedu.jacobian_determinant(zeros_dvf(6, 7)), torch.ones(1, 6, 7))),
    ("folding-zero-field-is-zero", lambda: float(regedu.folding_fraction(zeros_dvf(6, 7))) == 0.0),
    ("random_dvf-zero-max-is-zero", lambda: torch.equal(regedu.random_dvf((8, 8), max_displacement=0.0, seed=0), zeros_dvf(8, 8))),
    ("invert_dvf-zero-iterations", lambda: torch.equal(regedu.invert_dvf(torch.ones(1, 2, 8, 8), iterations=0), -torch.ones(1, 2, 8, 8))),
    ("dice-identical-maps", lambda: float(regedu.dice(torch.arange(3).repeat(1, 1, 3, 1), torch.arange(3).repeat(1, 1, 3, 1))) == 1.0),
    ("tre-integer-points", _tre_integer_points),
    ("mi-constant-images-zero", lambda: float(regedu.mutual_information(torch.ones(1, 1, 8, 8), torch.ones(1, 1, 8, 8))) == pytest.approx(0.0, abs=1e-6)),
    ("lncc-constant-interior-zero", lambda: float(regedu.lncc(torch.ones(1, 1, 12, 12), torch.ones(1, 1, 12, 12), border="inside")) == pytest.approx(0.0, abs=1e-6)),
    ("cpu_threads-restores", lambda: _threads_restored(torch.get_num_threads())),
]


def _threads_restored(before: int) -> bool:
    with cpu_threads(1):
        inside = torch.get_num_threads()
    with cpu_threads(None):
        unchanged = torch.get_num_threads()
    return inside == 1 and torch.get_num_threads() == before and unchanged == before


@pytest.mark.parametrize("check", [pytest.param(c, id=i) for i, c in VALUES])
def test_degenerate_input_gives_the_correct_finite_value(check):
    assert check()


def test_the_table_is_large_enough():
    assert len(ERRORS) + len(VALUES) >= 60 and len(ERRORS) >= 40
