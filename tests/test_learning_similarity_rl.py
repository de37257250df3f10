"""Deep iterative registration: a learned multi-modal similarity (scores aligned pairs higher, plugs into
regedu.register and improves alignment) and a reinforcement-learning agent for rigid registration
(reduces the misalignment of unseen pairs)."""

import pytest
import torch

import regedu
from regedu import learning as L
from regedu.data import PairDataset, brain_slice, synthetic_subject
from regedu.learning.rl import RigidPairs, default_actions, rigid_from_params


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def brain():
    return brain_slice(resolution=4)  # (48, 40)


@pytest.fixture(scope="module")
def multimodal_eval(brain):
    return PairDataset(brain, mode="eval", size=8, modality="t2")  # fixed T2-like, moving T1


@pytest.fixture(scope="module")
def similarity_net(brain, multimodal_eval):
    regedu.seed_everything(0, deterministic=False)
    net = L.SimilarityNet(2, features=(8, 16, 16))
    pairs = PairDataset(brain, mode="train", size=100_000, modality="t2", seed=1)
    hist = L.train_similarity(net, pairs, steps=300, max_displacement=10.0, val_pairs=multimodal_eval, lr=3e-3,
                              batch_size=8, device="cpu", progress=False)
    assert hist.val["mae"][-1] < 2.0  # voxels of misalignment, of up to 10
    return net


def test_learned_similarity_prefers_aligned_pairs(similarity_net, multimodal_eval):
    """Held-out multi-modal pairs: the aligned pair scores higher than the same pair deformed (by the
    data set's ground truth, a few voxels) or shifted (3.6 voxels)."""
    shift = regedu.transforms.translation_matrix(torch.tensor([3.0, -2.0]))
    scores = []
    for i in range(len(multimodal_eval)):
        it = multimodal_eval[i]
        fixed, moving = it["fixed"][None], it["moving"][None]
        aligned = regedu.warp(moving, it["dvf"][None])
        with torch.no_grad():
            scores.append([float(similarity_net.similarity(fixed, img))
                           for img in (aligned, moving, regedu.affine_warp(aligned, shift))])
    s = torch.tensor(scores)  # (pairs, [aligned, deformed, shifted])
    assert (s[:, 0] > s[:, 2]).all(), s
    assert (s[:, 0] > s[:, 1]).sum() >= 6, s
    assert s[:, 0].mean() > s[:, 1].mean() > s[:, 2].mean(), s


def test_learned_similarity_as_loss_in_the_iterative_engine(similarity_net, multimodal_eval):
    loss = similarity_net.as_loss()
    it = multimodal_eval[0]
    fixed, moving = it["fixed"][None], it["moving"][None].requires_grad_(True)
    value = loss(fixed, moving, mask=it["mask"][None])
    assert value.dim() == 0
    value.backward()
    assert moving.grad is not None and moving.grad.abs().sum() > 0  # differentiable w.r.t. the moved image
    assert all(p.grad is None for p in similarity_net.parameters())  # the network is frozen
    # deep iterative registration: rigid registration of multi-modal pairs with the learned similarity
    truth = torch.tensor([[8.0, 3.0, -2.0]])  # degrees, voxels
    agent = L.RigidAgent((48, 40), qnet=L.QNetwork(12, features=(4,)))  # only for its distance D
    before = float(agent.distance(torch.zeros(1, 3), truth))
    after = []
    for i in range(4):
        it = multimodal_eval[i]
        aligned = regedu.warp(it["moving"][None], it["dvf"][None])  # T1 aligned with the T2-like fixed image
        moving = regedu.affine_warp(aligned, torch.linalg.inv(rigid_from_params(truth, (48, 40))))
        result = regedu.register(it["fixed"][None], moving, transform="rigid", similarity=loss, progress=False)
        found = regedu.transforms.rigid_params(result.matrix, center=(23.5, 19.5))
        after.append(float(agent.distance(torch.cat([torch.rad2deg(found[:, :1]), found[:, 1:]], 1), truth)))
    assert max(after) < 0.5 * before, (before, after)


def test_agent_rewards_are_distance_reductions():
    agent = L.RigidAgent((32, 32), qnet=L.QNetwork(12, features=(4,)))
    truth = torch.tensor([[10.0, 3.0, -2.0]])
    p = torch.zeros(1, 3)
    r = agent.rewards(p, truth)[0]
    acts = default_actions()
    # moving towards the truth along one parameter helps, away hurts
    assert r[(acts == torch.tensor([1.0, 0, 0])).all(1)] > 0 and r[(acts == torch.tensor([-1.0, 0, 0])).all(1)] < 0
    assert r[(acts == torch.tensor([0, 1.0, 0])).all(1)] > 0 and r[(acts == torch.tensor([0, 0, -1.0])).all(1)] > 0
    assert float(agent.distance(truth, truth)) == 0.0
    # the parameters are a rigid matrix about the centre: the centre moves by the translation only
    A = rigid_from_params(truth, (32, 32))
    c = torch.tensor([15.5, 15.5, 1.0])
    assert torch.allclose(A[0] @ c, torch.tensor([18.5, 13.5, 1.0]), atol=1e-5)


def test_rl_agent_reduces_misalignment_of_unseen_pairs(brain):
    images = torch.cat([synthetic_subject(brain, seed=s)["image"] for s in range(12)])
    unseen = torch.cat([synthetic_subject(brain, seed=1000 + s)["image"] for s in range(4)])
    regedu.seed_everything(0, deterministic=False)
    agent = L.RigidAgent(tuple(images.shape[2:]), qnet=L.QNetwork(12, features=(8, 16, 32, 32)))
    hist = L.train_agent(agent, images, steps=150, lr=2e-3, batch_size=16, device="cpu", progress=False)
    assert hist.steps == 150
    test = RigidPairs(unseen, size=16, seed=7)
    batch = next(iter(torch.utils.data.DataLoader(test, batch_size=16)))
    result = agent.register(batch["fixed"], batch["moving"], steps=40, truth=batch["truth"])
    start, end = result.distances[0], result.distances[-1]
    assert float(end.mean()) < 0.7 * float(start.mean()), (start.mean(), end.mean())
    assert float((end < start).float().mean()) >= 0.75
    assert result.matrix.shape == (16, 3, 3) and result.trajectory.shape[1:] == (16, 3)
    # the returned matrix registers: warping the moving image by it gives the result's moved image
    assert torch.allclose(regedu.affine_warp(batch["moving"], result.matrix), result.moved, atol=1e-5)
