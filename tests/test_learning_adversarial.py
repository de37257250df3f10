"""regedu.learning.adversarial: discriminators, GAN losses, and the alternating training loop."""

import math

import pytest
import torch

import regedu
from regedu import data, learning
from regedu.learning.adversarial import (
    AlignmentDiscriminator,
    DeformationDiscriminator,
    alignment_score,
    discriminator_loss,
    generator_loss,
    train_adversarial,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # the shared one-thread fixture (conftest.py)


def test_losses_are_binary_cross_entropy():
    zero = torch.zeros(3)
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))     # undecided: log 2 each
    confident = discriminator_loss(torch.full((3,), 10.0), torch.full((3,), -10.0)).item()
    assert confident < 1e-3
    assert generator_loss(torch.full((3,), 10.0)).item() < 1e-3 < generator_loss(torch.full((3,), -10.0)).item()


@pytest.mark.parametrize("ndim", [2, 3])
def test_discriminator_shapes_and_errors(ndim):
    shape = (16, 16) if ndim == 2 else (8, 8, 8)
    d = AlignmentDiscriminator(ndim, features=(4, 8))
    assert d(torch.rand(2, 1, *shape), torch.rand(2, 1, *shape)).shape == (2,)
    s = alignment_score(d, torch.rand(2, 1, *shape), torch.rand(2, 1, *shape))
    assert ((s > 0) & (s < 1)).all() and d.training
    e = DeformationDiscriminator(ndim, features=(4, 8))
    assert e(torch.randn(3, ndim, *shape)).shape == (3,)
    with pytest.raises(ValueError, match="Discriminator: x must be"):
        e(torch.randn(3, ndim + 1, *shape))


def test_train_adversarial_checks_its_arguments():
    ds = data.PairDataset(data.brain_slice("axial", size=(16, 16)), mode="train", size=8, seed=0)
    net = learning.RegistrationNet(2, features=(4, 8))
    with pytest.raises(ValueError, match="judge must be one of"):
        train_adversarial(net, AlignmentDiscriminator(2), ds, judge="realism", steps=1, progress=False)
    with pytest.raises(TypeError, match="needs a DeformationDiscriminator"):
        train_adversarial(net, AlignmentDiscriminator(2), ds, judge="deformation", steps=1, progress=False)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        train_adversarial(net, AlignmentDiscriminator(2), ds, steps=0, progress=False)


def test_deformation_judge_records_both_players_and_is_deterministic():
    def run():
        ds = data.PairDataset(data.brain_slice("axial", size=(24, 24)), mode="train", size=100, seed=0, max_displacement=2.0)
        regedu.seed_everything(0)
        net = learning.RegistrationNet(2, features=(4, 8))
        d = DeformationDiscriminator(2, features=(4, 8))
        return train_adversarial(net, d, ds, judge="deformation", steps=6, objective=learning.WeaklySupervised(weight=0.0),
                                 adversarial_weight=0.1, batch_size=2, seed=0, progress=False, device="cpu")

    h1, h2 = run(), run()
    assert h1.train["step"] == list(range(1, 7))
    for key in ("d_loss", "g_adv", "d_real", "d_fake", "base_soft_dice", "loss"):
        assert len(h1.train[key]) == 6 and all(math.isfinite(v) for v in h1.train[key])
    assert h1.train["d_loss"] == h2.train["d_loss"]


@pytest.mark.slow
def test_alignment_judge_learns_to_register_and_to_score_alignment():
    shape = (64, 64)
    template = data.brain_slice("axial", size=shape)
    train_set = data.PairDataset(template, mode="train", size=1000, seed=0, max_displacement=64 / 12)
    eval_set = data.PairDataset(template, mode="eval", size=8, seed=0, max_displacement=64 / 12)
    regedu.seed_everything(0)
    net = learning.RegistrationNet(2, features=(16, 32, 32), scale=0.5, final_init_std=1e-2)
    d = AlignmentDiscriminator(2)
    h = train_adversarial(net, d, train_set, "alignment", steps=300, weight=0.01, lr=2e-3, seed=0, progress=False,
                          val_data=eval_set, device="cpu")
    identity = learning.evaluate(learning.IdentityNet(), eval_set, "unsupervised")
    assert h.val["dice"][-1] > identity["dice"] + 0.02          # registered with no similarity measure at all
    b = next(iter(torch.utils.data.DataLoader(eval_set, batch_size=8)))
    aligned = alignment_score(d, b["fixed"], regedu.warp(b["moving"], b["dvf"])).mean()
    unaligned = alignment_score(d, b["fixed"], b["moving"]).mean()
    assert aligned > unaligned + 0.1                             # the discriminator is a metric of alignment


def test_discriminators_rebuild_from_their_config():
    from regedu.learning.layers import build_model

    for d in (AlignmentDiscriminator(2, features=(4, 8)), DeformationDiscriminator(3, features=(4, 8))):
        rebuilt = build_model(type(d).__name__, d.config)
        assert type(rebuilt) is type(d) and rebuilt.state_dict().keys() == d.state_dict().keys()
