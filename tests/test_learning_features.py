"""Autoencoder features as a similarity (Wu et al. 2013/2016) and the error-estimation helpers (Eppenhof
& Pluim 2018): regedu.learning.features and regedu.learning.error_estimation."""

import pytest
import torch

import regedu
from regedu.data import brain_slice, synthetic_subject
from regedu.learning import error_estimation as ee
from regedu.learning.features import PatchAutoencoder, feature_similarity, random_patches, train_autoencoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    brain = brain_slice(resolution=4, size=(40, 40))
    return torch.cat([synthetic_subject(brain, seed=s)["image"] for s in range(6)])


@pytest.fixture(scope="module")
def autoencoder(images):
    torch.manual_seed(0)
    ae = PatchAutoencoder(2, patch=7, features=8, hidden=32)
    losses = train_autoencoder(ae, images, steps=150, batch=128, seed=0)
    return ae, losses


def test_autoencoder_learns_to_reconstruct_patches(autoencoder, images):
    ae, losses = autoencoder
    assert len(losses) == 150
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.3 * first, (first, last)
    patches = random_patches(images, 64, 7, torch.Generator().manual_seed(1))
    assert patches.shape == (64, 1, 7, 7)
    with torch.no_grad():
        rec = ae(patches)
    # the 8-number code keeps most of the 49-pixel patches' variance
    assert (rec - patches).pow(2).mean() < 0.5 * patches.var()


def test_dense_features_are_standardised_and_centred_on_their_voxel(autoencoder, images):
    ae, _ = autoencoder
    with torch.no_grad():
        f = ae.encode(images)
    assert f.shape == (6, 8, 40, 40)
    assert f.mean((0, 2, 3)).abs().max() < 1e-3 and (f.std((0, 2, 3)) - 1).abs().max() < 1e-3
    # the feature at voxel (i, j) is the code of the 7x7 patch centred there
    i, j = 17, 22
    with torch.no_grad():
        z = ae.encoder(images[:1, :, i - 3:i + 4, j - 3:j + 4])[0, :, 0, 0]
    assert torch.allclose(f[0, :, i, j], (z - ae.mean.flatten()) / ae.std.flatten(), atol=1e-5)


def test_feature_similarity_is_a_loss_for_the_iterative_engine(autoencoder, images):
    ae, _ = autoencoder
    loss = feature_similarity(ae)
    fixed = images[:1]
    shifted = regedu.affine_warp(fixed, regedu.transforms.translation_matrix(torch.tensor([2.0, -3.0])))
    assert float(loss(fixed, fixed)) == 0.0
    assert float(loss(fixed, shifted)) > 0.0
    moved = shifted.clone().requires_grad_(True)
    loss(fixed, moved, mask=torch.ones(1, 1, 40, 40)).backward()
    assert moved.grad.abs().sum() > 0 and all(p.grad is None for p in ae.parameters())
    # inside regedu.register it recovers a translation (registering the shifted image back)
    result = regedu.register(fixed, shifted, transform="translation", similarity=loss, progress=False)
    t = result.matrix[0, :2, 2]
    assert torch.allclose(t, torch.tensor([-2.0, 3.0]), atol=0.5), t
    with pytest.raises(ValueError, match="same number of channels"):
        loss(fixed, torch.rand(1, 2, 40, 40))
    with pytest.raises(ValueError, match="patch must be odd"):
        PatchAutoencoder(patch=4)
    with pytest.raises(ValueError, match="smaller than the patch size"):
        random_patches(torch.rand(1, 1, 5, 5), 4, 7)


def test_true_error_map_and_calibration():
    u = torch.zeros(2, 2, 8, 8)
    v = torch.zeros(2, 2, 8, 8)
    v[:, 0] = 3.0
    v[:, 1] = -4.0
    assert torch.allclose(ee.true_error_map(u, v), torch.full((2, 1, 8, 8), 5.0))
    assert ee.true_error_map(v, v).abs().max() == 0
    e = torch.rand(1, 1, 16, 16)
    assert torch.allclose(ee.pool_to(e, (4, 4))[0, 0, 0, 0], e[0, 0, :4, :4].mean())
    true = torch.rand(1000) * 5
    perfect = ee.calibration(true, true, bins=5)
    assert torch.allclose(perfect["predicted"], perfect["true"]) and abs(float(perfect["correlation"]) - 1) < 1e-5
    assert perfect["count"].sum() == 1000 and float(perfect["mae"]) == 0.0
    constant = ee.calibration(torch.full((1000,), 2.5), true, bins=5)
    assert float(constant["mae"]) > 1.0  # a constant guess is not calibrated per bin
    with pytest.raises(ValueError, match="same, non-zero number of elements"):
        ee.calibration(torch.rand(3), torch.rand(4))
    with pytest.raises(ValueError, match="spatial size"):
        ee.true_error_map(u, torch.zeros(2, 2, 8, 9))
