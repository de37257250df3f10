"""regedu.learning.probabilistic: KL term, sampling, and what the variance learns (Dalca et al. 2019)."""

import math

import pytest
import torch

import regedu
from regedu import data, learning
from regedu.learning.probabilistic import Probabilistic, ProbabilisticNet, kl_divergence, prior_variance


pytestmark = pytest.mark.usefixtures("one_thread")  # the shared one-thread fixture (conftest.py)


def test_kl_is_minimal_at_the_prior_variance():
    lam = 2.0
    mean = torch.zeros(1, 2, 8, 8)
    best = math.log(prior_variance(2, lam))
    assert prior_variance(2, lam) == pytest.approx(1 / (lam * 4))
    values = {d: kl_divergence(mean, torch.full_like(mean, best + d), lam).item() for d in (-0.5, 0.0, 0.5)}
    assert values[0.0] < values[-0.5] and values[0.0] < values[0.5]
    # per voxel and component: 0.5 * (lam * D * s2 - log s2) summed over the 2 components
    s2 = prior_variance(2, lam)
    assert values[0.0] == pytest.approx(2 * 0.5 * (lam * 4 * s2 - math.log(s2)), rel=1e-5)


def test_kl_penalises_a_rough_mean_like_diffusion():
    lam = 3.0
    log_var = torch.zeros(2, 2, 6, 7)
    mean = torch.randn(2, 2, 6, 7)
    extra = kl_divergence(mean, log_var, lam) - kl_divergence(torch.zeros_like(mean), log_var, lam)
    assert extra.item() == pytest.approx(0.5 * lam * regedu.diffusion(mean).item(), rel=1e-5)
    shift = torch.full_like(mean, 2.0)                              # a translation costs nothing
    assert kl_divergence(shift, log_var, lam).item() == pytest.approx(kl_divergence(torch.zeros_like(mean), log_var, lam).item())


def test_kl_errors():
    with pytest.raises(ValueError, match="kl_divergence: mean and log_var"):
        kl_divergence(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5))
    with pytest.raises(ValueError, match="prior_weight must be > 0"):
        kl_divergence(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), prior_weight=0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_net_samples_in_training_and_returns_the_mean_in_eval(ndim):
    torch.manual_seed(0)
    shape = (16, 16) if ndim == 2 else (8, 12, 8)
    net = ProbabilisticNet(ndim, features=(4, 8), init_log_var=0.0)
    f, m = torch.rand(2, 1, *shape), torch.rand(2, 1, *shape)
    a, b = net(f, m), net(f, m)
    assert a["dvf"].shape == (2, ndim, *shape) and a["mean"].shape == a["log_var"].shape == (2, ndim, *shape)
    assert not torch.equal(a["velocity"], b["velocity"])           # training: a new sample every call
    assert torch.allclose(a["log_var"], torch.zeros_like(a["log_var"]), atol=0.5)   # the bias sets the start
    net.eval()
    c, d = net(f, m), net(f, m)
    assert torch.equal(c["dvf"], d["dvf"]) and torch.equal(c["velocity"], c["mean"])


def test_samples_spread_with_sigma_and_are_reproducible():
    net = ProbabilisticNet(2, features=(4, 8), init_log_var=math.log(0.25), final_init_std=1e-6).eval()
    f = m = torch.zeros(1, 1, 16, 16)
    s1 = net.sample(f, m, n=64, generator=torch.Generator().manual_seed(1))
    s2 = net.sample(f, m, n=64, generator=torch.Generator().manual_seed(1))
    assert s1.shape == (64, 1, 2, 16, 16) and torch.equal(s1, s2)
    # velocity std 0.5 per voxel, independent: integration averages neighbours, the spread stays below 0.5
    spread = s1.std(0).mean().item()
    assert 0.05 < spread < 0.5
    with pytest.raises(ValueError, match="n must be >= 1"):
        net.sample(f, m, n=0)


def test_objective_needs_a_distribution():
    obj = Probabilistic()
    out = learning.RegistrationNet(2, features=(4, 8))(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="no 'mean'"):
        obj(out, {"fixed": torch.rand(1, 1, 8, 8)})
    with pytest.raises(ValueError, match="image_sigma and prior_weight must be > 0"):
        Probabilistic(image_sigma=0)


@pytest.mark.slow
def test_training_registers_and_the_variance_is_lower_where_the_image_has_contrast():
    shape = (48, 48)
    template = data.brain_slice("axial", size=shape)
    train_set = data.PairDataset(template, mode="train", size=1000, seed=0, max_displacement=4.0)
    eval_set = data.PairDataset(template, mode="eval", size=8, seed=0, max_displacement=4.0)
    regedu.seed_everything(0)
    net = ProbabilisticNet(2, features=(8, 16, 16), scale=0.5)
    learning.train(net, train_set, Probabilistic(image_sigma=0.02, prior_weight=1.0), steps=200, lr=2e-3, batch_size=4,
                   seed=0, progress=False, device="cpu")
    r = learning.evaluate(net, eval_set, "unsupervised")
    r0 = learning.evaluate(learning.IdentityNet(), eval_set, "unsupervised")
    assert r["dice"] > r0["dice"] + 0.03 and r["folding"] == 0
    b = {k: v[None] for k, v in eval_set[0].items()}
    net.eval()
    with torch.no_grad():
        std = regedu.resize((0.5 * net(b["fixed"], b["moving"])["log_var"]).exp().mean(1, keepdim=True), shape)
    brain = b["mask"] > 0
    assert std[brain].mean() < 0.85 * std[~brain].mean()


def test_checkpoint_round_trip(tmp_path):
    net = ProbabilisticNet(2, features=(4, 8), scale=0.5, init_log_var=-3.0)
    path = learning.save_checkpoint(tmp_path / "prob.pt", net)
    loaded = learning.load_checkpoint(path).model
    assert isinstance(loaded, ProbabilisticNet) and loaded.config == net.config
    f, m = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    assert torch.equal(loaded.eval()(f, m)["dvf"], net.eval()(f, m)["dvf"])
