"""Spatial transformer classifier vs a plain CNN with the same backbone on strongly distorted digits."""

import pytest
import torch

import regedu
from regedu import learning as L
from regedu.data import DistortedDigits


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convolutions run fastest on one thread, and far faster than two when the cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


DISTORTION = dict(size=40, rotation=30, scale=(0.5, 1.0), translation=0.25)


def _tensors(ds):
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.utils.data.TensorDataset(torch.stack(xs), torch.tensor(ys))


def _centre_offset(images):
    """Mean distance of each image's intensity centroid from the canvas centre, in units of the canvas size."""
    H, W = images.shape[-2:]
    grid = regedu.identity_grid((H, W))
    w = images[:, 0].clamp_min(0)
    c = (w[:, None] * grid).flatten(2).sum(2) / w.flatten(1).sum(1, keepdim=True)
    centre = torch.tensor([(H - 1) / 2, (W - 1) / 2])
    return float((c - centre).norm(dim=1).mean() / H)


def test_stn_classifier_beats_plain_cnn_and_canonicalises():
    train_set = _tensors(DistortedDigits("train", length=600, **DISTORTION))
    test_set = _tensors(DistortedDigits("test", length=200, **DISTORTION))
    acc = {}
    for name, make in (("cnn", lambda: L.CNNClassifier(features=(8, 16, 32))),
                       ("stn", lambda: L.STNClassifier(features=(8, 16, 32), stn_features=(8, 16)))):
        regedu.seed_everything(0, deterministic=False)
        model = make()
        hist = L.train(model, train_set, "classification", steps=200, lr=2e-3, batch_size=32, device="cpu",
                       val_data=test_set, progress=False)
        acc[name] = hist.val["accuracy"][-1]
        if name == "stn":
            stn = model
    assert acc["stn"] > acc["cnn"] + 0.1, acc
    assert acc["stn"] > 0.5, acc
    # the transformer learned to undo the translation: its outputs are centred
    images = test_set.tensors[0]
    with torch.no_grad():
        canonical, A = stn.eval().canonicalise(images)
    assert _centre_offset(canonical) < 0.85 * _centre_offset(images)
    assert A.shape == (200, 3, 3)
