"""regedu.learning.patches: tiles, blending, patch datasets and sliding-window inference."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from regedu import data
from regedu.learning.patches import PatchDataset, blend_window, crop, predict, tile_border_distance, tile_starts


def test_tile_starts_cover_the_axis():
    assert tile_starts(10, 4) == [0, 4, 6]
    assert tile_starts(10, 4, overlap=0.5) == [0, 2, 4, 6]
    assert tile_starts(8, 8) == [0]
    for length, patch, overlap in [(37, 16, 0.0), (37, 16, 0.5), (64, 32, 0.25)]:
        starts = tile_starts(length, patch, overlap)
        covered = torch.zeros(length, dtype=torch.bool)
        for a in starts:
            covered[a:a + patch] = True
        assert covered.all() and starts[-1] + patch == length
    with pytest.raises(ValueError, match="patch must be in"):
        tile_starts(10, 11)
    with pytest.raises(ValueError, match="overlap must be in"):
        tile_starts(10, 4, overlap=1.0)


def test_blend_window():
    w = blend_window((9, 9))
    assert w.shape == (1, 1, 9, 9) and w.max() == w[0, 0, 4, 4] == 1.0
    assert w.min() > 0 and torch.equal(w, w.flip(2)) and torch.equal(w, w.flip(3))
    assert w[0, 0, 4, 0] < 0.01                                   # small at the tile border
    assert torch.equal(blend_window((4, 5, 6), "constant"), torch.ones(1, 1, 4, 5, 6))
    with pytest.raises(ValueError, match="kind must be one of"):
        blend_window((4, 4), "linear")


def test_crop_keeps_displacement_values():
    batch = {"fixed": torch.rand(1, 1, 10, 12), "dvf": torch.rand(1, 2, 10, 12), "name": "x"}
    c = crop(batch, (2, 3), (4, 5))
    assert c["fixed"].shape == (1, 1, 4, 5) and c["dvf"].shape == (1, 2, 4, 5) and c["name"] == "x"
    assert torch.equal(c["dvf"], batch["dvf"][:, :, 2:6, 3:8])


def test_patch_dataset():
    pairs = data.PairDataset(data.brain_slice("axial", size=(32, 32)), mode="eval", size=3, seed=0)
    patches = PatchDataset(pairs, 16, seed=1)
    item = patches[0]
    assert len(patches) == 3
    assert item["fixed"].shape == (1, 16, 16) and item["dvf"].shape == (2, 16, 16) and item["mask"].shape == (1, 16, 16)
    assert torch.equal(patches[1]["fixed"], PatchDataset(pairs, 16, seed=1)[1]["fixed"])   # reproducible positions
    with pytest.raises(ValueError, match="larger than the images"):
        PatchDataset(pairs, 40)


class Pointwise(nn.Module):
    """A 'registration model' that sees one voxel at a time: dvf = (fixed - moving) in both channels."""

    def forward(self, fixed, moving):
        d = (fixed - moving).repeat(1, fixed.dim() - 2, *[1] * (fixed.dim() - 2))
        return {"dvf": d, "moved": moving}


class Blur(nn.Module):
    """A model with a receptive field (a 7x7 box filter with zero padding): tiles lose context at their borders."""

    def forward(self, fixed, moving):
        k = torch.ones(1, 1, 7, 7) / 49
        d = F.conv2d(fixed, k, padding=3).repeat(1, 2, 1, 1)
        return {"dvf": d, "moved": moving}


def test_tiling_is_exact_without_a_receptive_field():
    f, m = torch.rand(1, 1, 20, 24), torch.rand(1, 1, 20, 24)
    whole = predict(Pointwise(), f, m)["dvf"]
    for overlap, blend in [(0.0, "constant"), (0.5, "gaussian")]:
        tiled = predict(Pointwise(), f, m, patch_size=8, overlap=overlap, blend=blend)
        assert torch.allclose(tiled["dvf"], whole, atol=1e-6)
    assert len(predict(Pointwise(), f, m, patch_size=(10, 8))["tiles"]) == 2 * 3


def test_overlap_and_blending_reduce_the_seams_of_a_model_with_context():
    torch.manual_seed(0)
    f = torch.rand(1, 1, 48, 48) + 1.0
    m = torch.rand(1, 1, 48, 48)
    whole = predict(Blur(), f, m)["dvf"]
    naive = predict(Blur(), f, m, patch_size=16, overlap=0.0, blend="constant")["dvf"]
    blended = predict(Blur(), f, m, patch_size=16, overlap=0.5, blend="gaussian")["dvf"]
    dist = tile_border_distance((48, 48), 16)
    err_naive, err_blend = (naive - whole).abs()[0, 0], (blended - whole).abs()[0, 0]
    assert err_naive[dist <= 2].mean() > 0.1 and err_naive[dist >= 4].max() < 1e-6    # errors only near the seams
    assert err_blend.mean() < 0.5 * err_naive.mean()


def test_predict_restores_the_mode_and_checks_sizes():
    net = nn.Sequential()
    net.forward = lambda fixed, moving: {"dvf": torch.zeros(1, 2, *fixed.shape[2:]), "moved": moving}   # noqa: E731
    net.train()
    predict(net, torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    assert net.training
    with pytest.raises(ValueError, match="larger than the images"):
        predict(net, torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), patch_size=9)


def test_tile_border_distance():
    d = tile_border_distance((8, 12), (8, 6))
    assert d.shape == (8, 12)
    # one tile along rows (no interior border), two tiles along columns split at 6
    assert d[0, 5] == 0 and d[0, 6] == 0 and d[3, 4] == 1 and d[3, 0] == 5
    assert math.isinf(tile_border_distance((8, 8), 8)[0, 0].item())
