"""Spatial transformer classifier vs a plain CNN with the same backbone on strongly distorted digits."""

import pytest
import torch

import regedu
from regedu import learning as L
from regedu.data import DistortedDigits


pytestmark = pytest.mark.usefixtures("one_thread")


DISTORTION = dict(size=40, rotation=30, scale=(0.5, 1.0), translation=0.25)


def _tensors(ds):
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.utils.data.TensorDataset(torch.stack(xs), torch.tensor(ys))


def test_stn_classifier_beats_plain_cnn_and_canonicalises():
    train_set = _tensors(DistortedDigits("train", length=800, **DISTORTION))
    test_digits = DistortedDigits("test", length=200, **DISTORTION)
    test_set = _tensors(test_digits)
    acc = {}
    for name, make in (("cnn", lambda: L.CNNClassifier(features=(8, 16, 32))),
                       ("stn", lambda: L.STNClassifier(features=(8, 16, 32), stn_features=(8, 16)))):
        regedu.seed_everything(0, deterministic=False)
        model = make()
        hist = L.train(model, train_set, "classification", steps=300, lr=2e-3, batch_size=32, device="cpu",
                       val_data=test_set, progress=False)
        acc[name] = hist.val["accuracy"][-1]
    assert acc["stn"] > acc["cnn"] + 0.15, acc
    assert acc["stn"] > 0.6, acc
    # canonicalised outputs: the classifier sees digit(A_distortion @ A_stn x); the poses of what it sees vary
    # far less than the poses of the inputs (spread of the translation column over the test set, voxels)
    with torch.no_grad():
        canonical, A = model.eval().canonicalise(test_set.tensors[0])
    assert canonical.shape == (200, 1, 40, 40) and A.shape == (200, 3, 3)
    distortion = torch.stack([test_digits.matrix(i).float() for i in range(len(test_digits))])
    spread_in = distortion[:, :2, 2].std(0).norm()
    spread_out = (distortion @ A)[:, :2, 2].std(0).norm()
    assert spread_out < 0.75 * spread_in, (spread_in, spread_out)
