"""RL agents (regedu.learning.rl): the MDP with discount 0 (rewards = Q-targets), the stopping rules of
the greedy roll-out, the deformable agent on PCA modes (Krebs et al. 2017), and inputs of any dtype /
degenerate parameters (issue 11)."""

import math

import pytest
import torch
import torch.nn as nn

import regedu
from regedu.data import brain_slice, synthetic_subject
from regedu.learning import rl
from regedu.learning.rl import (STOP_REASONS, DeformableAgent, DeformablePairs, QNetwork, RigidAgent, RigidPairs,
                                default_actions, deformation_modes, train_agent)
from regedu.learning.similarity_net import MisalignedPairs, SimilarityNet

pytestmark = pytest.mark.usefixtures("one_thread")


class ConstantQ(nn.Module):
    """A stand-in Q-network that returns the same values for every state (to test the roll-out rules)."""

    def __init__(self, values):
        super().__init__()
        self.values = nn.Parameter(torch.tensor(values, dtype=torch.float32), requires_grad=False)
        self.config = {"n_actions": len(values)}

    def forward(self, fixed, moved):
        return self.values.expand(fixed.shape[0], -1)


@pytest.fixture(scope="module")
def modes():
    return deformation_modes((32, 32), n_modes=3, samples=60, spacing=16, max_displacement=4.0, seed=0)


def test_deformation_modes_are_orthogonal_principal_components(modes):
    m, explained = modes
    assert m.shape == (3, 2, 32, 32)
    flat = m.flatten(1)
    gram = flat @ flat.T
    off = gram - torch.diag(torch.diag(gram))
    assert off.abs().max() < 1e-3 * gram.diag().max()  # orthogonal
    assert (explained[:-1] >= explained[1:]).all() and explained.sum() <= 1.0 + 1e-6
    assert (gram.diag()[:-1] >= gram.diag()[1:]).all()  # largest variance first


def test_deformable_rewards_are_distance_reductions(modes):
    agent = DeformableAgent(modes[0], steps=(0.5,), qnet=QNetwork(6, features=(4,)))
    assert agent.actions.shape == (6, 3)
    truth = torch.tensor([[1.0, -1.0, 0.0]])
    p = torch.zeros(1, 3)
    r = agent.rewards(p, truth)[0]
    # +0.5 along mode 1 and -0.5 along mode 2 move toward the truth; the opposite moves away
    assert r[0] > 0 and r[1] < 0 and r[3] > 0 and r[2] < 0
    d0 = agent.distance(p, truth)
    assert torch.allclose(r, d0 - agent.distance(p + agent.actions, truth.expand(6, -1)))
    assert float(agent.distance(truth, truth)) == 0.0
    # the distance is the mean length of the difference of the two fields
    u = agent.field(p) - agent.field(truth)
    assert torch.allclose(d0, u.norm(dim=1).mean(), atol=1e-6)


def test_rollout_stop_reasons():
    img = torch.rand(2, 1, 16, 16)
    acts = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]])
    # every action predicted to hurt: both pairs stop at once
    agent = RigidAgent((16, 16), actions=acts, qnet=ConstantQ([-1.0, -2.0]), max_rotation=2, max_translation=2)
    res = agent.register(img, img, steps=10)
    assert res.steps_taken.tolist() == [0, 0] and res.stop_reasons == [STOP_REASONS[0]] * 2
    assert res.trajectory.shape == (2, 2, 3) and (res.params == 0).all()
    # +1 degree is always preferred: 0 -> 1 -> 2 (the box edge); then only -1 is allowed, which revisits 1: stop
    agent = RigidAgent((16, 16), actions=acts, qnet=ConstantQ([1.0, 0.5]), max_rotation=2, max_translation=2)
    res = agent.register(img, img, steps=10)
    assert res.steps_taken.tolist() == [2, 2] and res.stop_reasons == [STOP_REASONS[1]] * 2
    assert torch.allclose(res.params, torch.tensor([[2.0, 0, 0]] * 2))
    assert (res.actions[:2] == 0).all() and (res.actions[2:] == -1).all()
    # without stopping, the cap applies (and the agent oscillates at the box edge)
    res = agent.register(img, img, steps=5, stop=False)
    assert res.steps_taken.tolist() == [5, 5] and res.stop_reasons == [STOP_REASONS[2]] * 2
    assert res.trajectory.shape == (6, 2, 3)


def test_deformable_agent_learns_to_reduce_the_deformation(modes):
    brain = brain_slice(resolution=4, size=(32, 32))
    images = torch.cat([synthetic_subject(brain, seed=s)["image"] for s in range(8)])
    unseen = torch.cat([synthetic_subject(brain, seed=500 + s)["image"] for s in range(4)])
    regedu.seed_everything(0, deterministic=False)
    agent = DeformableAgent(modes[0], qnet=QNetwork(12, features=(8, 16, 16)), max_coefficient=2.0)
    hist = train_agent(agent, images, steps=120, lr=3e-3, batch_size=16, device="cpu", progress=False)
    assert hist.steps == 120
    test = DeformablePairs(unseen, agent, size=12, seed=3)
    batch = next(iter(torch.utils.data.DataLoader(test, batch_size=12)))
    # the test pairs are exact: the true field registers them
    assert torch.allclose(regedu.warp(batch["moving"], agent.field(batch["truth"])), batch["fixed"], atol=1e-5)
    res = agent.register(batch["fixed"], batch["moving"], steps=40, truth=batch["truth"])
    start, end = res.distances[0], res.distances[-1]
    assert float(end.mean()) < 0.6 * float(start.mean()), (start.mean(), end.mean())
    assert res.dvf.shape == (12, 2, 32, 32) and res.matrix is None
    assert torch.allclose(regedu.warp(batch["moving"], res.dvf), res.moved, atol=1e-5)
    assert (res.params.abs() <= 2.0 + 1e-6).all()  # never leaves its box


@pytest.mark.parametrize("dtype", [torch.float64, torch.uint8, torch.int64, torch.float16])
def test_networks_and_agents_accept_any_image_dtype(dtype):
    torch.manual_seed(0)
    x = torch.rand(2, 1, 24, 24)
    y = torch.rand(2, 1, 24, 24)
    scale = 255 if not dtype.is_floating_point else 1
    xd, yd = (x * scale).to(dtype), (y * scale).to(dtype)
    ref_x, ref_y = xd.float() / scale * scale, yd.float() / scale * scale
    q = QNetwork(12, features=(4, 8))
    out = q(xd, yd)
    assert out.dtype == torch.float32 and torch.allclose(out, q(ref_x, ref_y), atol=1e-5)
    s = SimilarityNet(2, features=(4, 8))
    assert torch.allclose(s(xd, yd), s(ref_x, ref_y), atol=1e-5)
    agent = RigidAgent((24, 24), qnet=q)
    a, b = agent.register(xd, yd, steps=3), agent.register(ref_x, ref_y, steps=3)
    assert torch.equal(a.params, b.params) and a.moved.dtype == torch.float32


def test_degenerate_parameters_are_rejected_with_the_argument_named(modes):
    img = torch.rand(1, 1, 16, 16)
    cases = [
        (lambda: RigidAgent((16, 16), points=1), ValueError, "points must be >= 2"),
        (lambda: RigidAgent((16, 16), max_rotation=-1), ValueError, "max_rotation must be > 0 and <= 180"),
        (lambda: RigidAgent((16, 16), max_translation=math.nan), ValueError, "max_translation must be a finite number"),
        (lambda: RigidAgent((16, 16, 16)), ValueError, "shape must be 2D"),
        (lambda: RigidAgent((16, 16), actions=torch.zeros(0, 3)), ValueError, r"actions must have shape \(A, 3\)"),
        (lambda: RigidAgent((16, 16), actions=torch.zeros(2, 3)), ValueError, "non-zero parameter step"),
        (lambda: RigidAgent((16, 16), qnet=QNetwork(5, features=(4,))), ValueError, "5 outputs but there are 12 actions"),
        (lambda: default_actions(()), ValueError, "at least one positive step"),
        (lambda: default_actions((0.0,)), ValueError, "steps must be > 0"),
        (lambda: RigidAgent((16, 16)).register(img, img, steps=-1), ValueError, "steps must be >= 0"),
        (lambda: RigidAgent((16, 16)).register(img, torch.rand(1, 1, 16, 18)), ValueError, "same spatial size"),
        (lambda: RigidAgent((16, 16)).register(img, img, truth=torch.zeros(2, 3)), ValueError, r"truth must have shape \(B, 3\)"),
        (lambda: RigidAgent((20, 20)).register(img, img), ValueError, r"images must be \(20, 20\)"),
        (lambda: RigidPairs(img, size=0), ValueError, "size must be >= 1"),
        (lambda: RigidPairs(img, max_rotation=-5), ValueError, "max_rotation must be >= 0"),
        (lambda: train_agent(RigidAgent((16, 16)), img, steps=0), ValueError, "steps must be >= 1"),
        (lambda: DeformableAgent(torch.zeros(3, 3, 16, 16)), ValueError, r"modes must be a tensor \(K, 2, H, W\)"),
        (lambda: DeformableAgent(modes[0], max_coefficient=0), ValueError, "max_coefficient must be > 0"),
        (lambda: DeformablePairs(img, DeformableAgent(modes[0]), size=4), ValueError, r"must be \(32, 32\)"),
        (lambda: deformation_modes((16, 16), n_modes=0), ValueError, "n_modes must be >= 1"),
        (lambda: deformation_modes((16, 16), n_modes=4, samples=2), ValueError, "samples must be >= 4"),
        (lambda: QNetwork(0), ValueError, "n_actions must be >= 1"),
        (lambda: QNetwork(4, channels=0), ValueError, "channels must be >= 1"),
        (lambda: SimilarityNet(4), ValueError, "ndim must be 2 or 3"),
        (lambda: MisalignedPairs([], 5.0), ValueError, "pairs is empty"),
        (lambda: MisalignedPairs([0], -1.0), ValueError, "max_displacement must be >= 0"),
        (lambda: MisalignedPairs([0], 5.0, rigid=1.5), ValueError, "rigid must be >= 0 and <= 1"),
        (lambda: MisalignedPairs([0], 5.0, halvings=-1), ValueError, "halvings must be >= 0"),
        (lambda: MisalignedPairs([0], 5.0, smoothness=0), ValueError, "smoothness must be > 0"),
        (lambda: SimilarityNet(2, features=(4,)).error(img, img, mask=torch.zeros(1, 1, 16, 16)), ValueError, "mask is empty"),
    ]
    for make, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            make()
    assert rl.STOP_REASONS == STOP_REASONS
