"""Bad input gets a clear error naming the function, the argument, the expectation and what was given."""

import numpy as np
import pytest
import torch

import regedu


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"warp: image must be a 4D or 5D tensor.*got a 3D tensor of shape \(1, 16, 16\)"):
        regedu.warp(torch.rand(1, 16, 16), torch.zeros(1, 2, 16, 16))


def test_dvf_wrong_channel_count():
    with pytest.raises(ValueError, match=r"warp: dvf must have 2 channels .*got shape \(1, 3, 16, 16\) with 3 channels"):
        regedu.warp(torch.rand(1, 1, 16, 16), torch.zeros(1, 3, 16, 16))


def test_mismatched_spatial_sizes():
    with pytest.raises(ValueError, match=r"warp: image and dvf must have the same spatial size, got image \(16, 16\) and dvf \(16, 15\)"):
        regedu.warp(torch.rand(1, 1, 16, 16), torch.zeros(1, 2, 16, 15))
    with pytest.raises(ValueError, match=r"ncc: fixed and moving must have the same spatial size"):
        regedu.ncc(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))


def test_mixed_dimensions():
    with pytest.raises(ValueError, match=r"warp: image and dvf must have the same number of spatial dimensions"):
        regedu.warp(torch.rand(1, 1, 8, 8, 8), torch.zeros(1, 2, 8, 8))


def test_nans():
    dvf = torch.zeros(1, 2, 8, 8)
    dvf[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"warp: dvf contains 1 NaN and 0 infinite values"):
        regedu.warp(torch.rand(1, 1, 8, 8), dvf)
    img = torch.rand(1, 1, 8, 8)
    img[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"^mutual_information: fixed contains 0 NaN and 1 infinite values; expected finite numbers$"):
        regedu.mutual_information(img, torch.rand(1, 1, 8, 8))


def test_non_tensor_input():
    with pytest.raises(TypeError, match=r"warp: image must be a torch.Tensor, got ndarray \(convert it with torch.as_tensor\)"):
        regedu.warp(np.zeros((1, 1, 8, 8)), torch.zeros(1, 2, 8, 8))
    with pytest.raises(TypeError, match=r"jacobian_matrix: dvf must be a torch.Tensor, got list"):
        regedu.jacobian_determinant([[0.0]])


def test_unknown_options():
    with pytest.raises(ValueError, match=r"warp: mode must be one of .*'nearest'.*got 'cubic'"):
        regedu.warp(torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), mode="cubic")
    with pytest.raises(ValueError, match=r"warp: padding_mode must be one of"):
        regedu.warp(torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), padding_mode="wrap")
    with pytest.raises(ValueError, match=r"get_loss: similarity must be one of 'ssd', 'mse', 'ncc', 'lncc', 'mi' or a callable, got 'cc'"):
        regedu.similarity.get_loss("cc")


def test_integer_image_needs_nearest():
    with pytest.raises(TypeError, match=r"warp: an integer image \(torch.int64\) can only be warped with mode='nearest'"):
        regedu.warp(torch.zeros(1, 1, 8, 8, dtype=torch.long), torch.zeros(1, 2, 8, 8))


def test_bspline_spacing_too_large():
    with pytest.raises(ValueError, match=r"control-point spacing must be positive and at most the image size minus 1"):
        regedu.random_bspline_dvf((16, 16), spacing=40)


def test_batch_mismatch():
    with pytest.raises(ValueError, match=r"warp: image and dvf must have the same batch size \(or one of them 1\), got 2 and 3"):
        regedu.warp(torch.rand(2, 1, 8, 8), torch.zeros(3, 2, 8, 8))
