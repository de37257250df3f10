r"""A reinforcement-learning agent for 2D rigid registration (lecture section A).

Registration as a sequence of small moves (Liao et al., 2017, *An artificial agent for robust image
registration*, AAAI; Krebs et al., 2017, agent-based action learning, MICCAI). The **state** is the pair
(fixed image, moving image resampled by the current rigid transform); the **actions** change one
rigid parameter by a small step (:math:`\pm 1^\circ` rotation, :math:`\pm 1` voxel along each axis, and
coarser steps); a **Q-network** :math:`Q_\theta(s, a)` scores every action from the image pair, and
the agent registers by acting greedily, :math:`a_t = \arg\max_a Q_\theta(s_t, a)`.

Training uses the ground truth, as in Liao et al. (supervised action learning): for a known true
transform :math:`p^*` the reward of action :math:`a` in state :math:`p` is the reduction of the
distance to the truth,

.. math:: r(p, a) = D(p, p^*) - D(p + \delta_a, p^*), \qquad
          D(p, p^*) = \frac{1}{|P|} \sum_{x \in P} \| A(p)\,x - A(p^*)\,x \|,

(mean displacement error in voxels over a grid of points :math:`P`), and :math:`Q_\theta(s, \cdot)`
is regressed onto :math:`r(p, \cdot)` for random states: a greedy policy on these values moves
toward the truth. Training runs through the one loop, :func:`regedu.learning.train` with the
``"regression"`` objective. Parameters :math:`p = (\phi, t_0, t_1)` (degrees, voxels) define
:math:`A(p)` = :func:`regedu.rigid_matrix` about the image centre, ``moved = affine_warp(moving, A(p))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .._checks import check_image, check_same_spatial
from ..spatial_transformer import affine_warp
from ..transforms import rigid_matrix
from .networks import ConvRegressor, _check_features, _pair_input


def rigid_from_params(p: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(B, 3)`` parameters (angle in degrees, t0, t1 in voxels) -> ``(B, 3, 3)`` rigid matrices about the image centre."""
    centre = [(s - 1) / 2 for s in shape]
    q = torch.cat([p[:, :1] * (math.pi / 180), p[:, 1:]], dim=1)
    return rigid_matrix(q, center=centre)


def default_actions(steps: Sequence[float] = (1.0, 4.0)) -> torch.Tensor:
    """Actions ``(A, 3)``: for every step size ``s``, :math:`\\pm s` degrees and :math:`\\pm s` voxels along each axis."""
    acts = []
    for s in steps:
        for k in range(3):
            for sign in (1.0, -1.0):
                a = [0.0, 0.0, 0.0]
                a[k] = sign * s
                acts.append(a)
    return torch.tensor(acts)


class QNetwork(nn.Module):
    """Q-network: a convolutional regressor on the (fixed, current moved) pair -> one value per action ``(B, A)``."""

    def __init__(self, n_actions: int = 12, channels: int = 1, features: Sequence[int] = (16, 32, 64, 64), hidden: int = 128,
                 norm: str | None = "instance"):
        super().__init__()
        self.channels = channels
        self.regressor = ConvRegressor(2, 2 * channels, n_actions, _check_features("QNetwork", features), hidden, pool=4, norm=norm)
        self.config = dict(n_actions=n_actions, channels=channels, features=list(features), hidden=hidden, norm=norm)

    def forward(self, fixed: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        return self.regressor(_pair_input("QNetwork", fixed, moved, 2, self.channels))


@dataclass
class AgentResult:
    """A roll-out: the final ``matrix`` ``(B, 3, 3)`` and ``params`` ``(B, 3)``, the ``moved`` image, the
    ``trajectory`` of parameters ``(steps+1, B, 3)``, the chosen ``actions`` ``(steps, B)`` and, when the
    truth was given, the ``distances`` to it ``(steps+1, B)`` in voxels."""

    matrix: torch.Tensor
    params: torch.Tensor
    moved: torch.Tensor
    trajectory: torch.Tensor
    actions: torch.Tensor
    distances: torch.Tensor | None = None


class RigidAgent:
    """A greedy Q-learning agent for 2D rigid registration.

    Args:
        shape: image size ``(H, W)`` the agent works on (other sizes are resized to it).
        actions: ``(A, 3)`` parameter steps (default :func:`default_actions`: ±1 and ±4 degrees/voxels).
        qnet: the Q-network (default a :class:`QNetwork` with ``len(actions)`` outputs).
        points: number of grid points per axis of :math:`P` for the distance :math:`D`.
        max_rotation, max_translation: the range of transforms the agent is trained on (degrees,
            voxels; :func:`train_agent` draws true transforms and states from it) and the box its
            roll-outs stay in (actions that would leave it are not taken: the Q-network knows nothing
            about states outside).
    """

    def __init__(self, shape: Sequence[int] = (64, 64), actions: torch.Tensor | None = None, qnet: QNetwork | None = None,
                 points: int = 8, max_rotation: float = 20.0, max_translation: float = 8.0):
        self.shape = tuple(int(s) for s in shape)
        self.max_rotation, self.max_translation = float(max_rotation), float(max_translation)
        if len(self.shape) != 2:
            raise ValueError(f"RigidAgent: shape must be 2D (H, W), got {shape!r}")
        self.actions = default_actions() if actions is None else torch.as_tensor(actions, dtype=torch.float32)
        if self.actions.dim() != 2 or self.actions.shape[1] != 3:
            raise ValueError(f"RigidAgent: actions must have shape (A, 3) (angle, t0, t1 steps), got {tuple(self.actions.shape)}")
        self.qnet = qnet if qnet is not None else QNetwork(len(self.actions))
        lin = [torch.linspace(0.1 * (s - 1), 0.9 * (s - 1), points) for s in self.shape]
        self.points = torch.stack(torch.meshgrid(*lin, indexing="ij"), -1).reshape(-1, 2)

    def distance(self, p: torch.Tensor, p_true: torch.Tensor) -> torch.Tensor:
        r""":math:`D(p, p^*)`: mean distance (voxels) between the points mapped by the two transforms, ``(B,)``."""
        A, B = rigid_from_params(p, self.shape), rigid_from_params(p_true, self.shape)
        x = self.points.to(A)
        d = x @ (A[:, :2, :2] - B[:, :2, :2]).transpose(1, 2) + (A[:, None, :2, 2] - B[:, None, :2, 2])
        return d.pow(2).sum(-1).sqrt().mean(-1)

    def rewards(self, p: torch.Tensor, p_true: torch.Tensor) -> torch.Tensor:
        """Distance reduction of every action, ``(B, A)``: the supervised Q-value targets."""
        acts = self.actions.to(p)
        d0 = self.distance(p, p_true)
        B, A = p.shape[0], acts.shape[0]
        moved = (p[:, None] + acts[None]).reshape(B * A, 3)
        d1 = self.distance(moved, p_true.repeat_interleave(A, 0)).reshape(B, A)
        return d0[:, None] - d1

    @torch.no_grad()
    def register(self, fixed: torch.Tensor, moving: torch.Tensor, steps: int = 60, truth: torch.Tensor | None = None,
                 stop: bool = True) -> AgentResult:
        """Register ``moving`` to ``fixed`` (``(B, 1, H, W)``) greedily from the identity.

        Every step applies the action with the highest Q-value among those that keep the parameters
        in the agent's range; with ``stop=True`` a pair stops when no action has a positive predicted
        value or when it would return to a state it has visited (an oscillation). ``truth`` ``(B, 3)`` (true parameters) records the distances.
        """
        fixed = check_image("RigidAgent.register", "fixed", fixed, ndim=2)
        moving = check_image("RigidAgent.register", "moving", moving, ndim=2)
        check_same_spatial("RigidAgent.register", "fixed", fixed, "moving", moving)
        if tuple(fixed.shape[2:]) != self.shape:
            raise ValueError(f"RigidAgent.register: images must be {self.shape} (the agent's shape), got {tuple(fixed.shape[2:])}")
        self.qnet.eval()
        dev = next(self.qnet.parameters()).device
        fixed, moving = fixed.to(dev), moving.to(dev)
        acts = self.actions.to(dev)
        bound = torch.tensor([self.max_rotation, self.max_translation, self.max_translation], device=dev)
        B = fixed.shape[0]
        p = torch.zeros(B, 3, device=dev)
        active = torch.ones(B, dtype=torch.bool, device=dev)
        traj, chosen, seen = [p.clone()], [], [{tuple(row)} for row in p.round(decimals=3).tolist()]
        for _ in range(steps):
            moved = affine_warp(moving, rigid_from_params(p, self.shape))
            q = self.qnet(fixed, moved)
            inside = ((p[:, None] + acts[None]).abs() <= bound + 1e-6).all(-1)  # (B, A)
            q = q.masked_fill(~inside, -math.inf)
            a = q.argmax(1)
            new = p + acts[a]
            for b in range(B):
                key = tuple(new[b].round(decimals=3).tolist())
                if stop and (q[b, a[b]] <= 0 or key in seen[b]):
                    active[b] = False
                seen[b].add(key)
            p = torch.where(active[:, None], new, p)
            traj.append(p.clone())
            chosen.append(torch.where(active, a, torch.full_like(a, -1)))
            if not bool(active.any()):
                break
        A = rigid_from_params(p, self.shape)
        trajectory = torch.stack(traj)
        dist = None
        if truth is not None:
            truth = truth.to(dev, torch.float32)
            dist = torch.stack([self.distance(t, truth) for t in trajectory])
        return AgentResult(A, p, affine_warp(moving, A), trajectory, torch.stack(chosen) if chosen else torch.empty(0, B), dist)

    def to(self, device) -> "RigidAgent":
        self.qnet.to(device)
        return self


class RigidPairs(Dataset):
    """Rigidly misaligned pairs with known truth, for training and testing :class:`RigidAgent`.

    ``images``: ``(N, 1, H, W)`` source images (e.g. synthetic subjects of a brain slice). Item ``i``:
    ``fixed`` = one image, true parameters :math:`p^*` (rotation up to ``max_rotation`` degrees,
    translation up to ``max_translation`` voxels), ``moving = affine_warp(fixed, A(p*)^{-1})`` (so that
    ``affine_warp(moving, A(p*)) ~= fixed``). With an ``agent``, items are training states: a random
    current estimate :math:`p` within the same ranges, ``moving`` is the current moved image
    ``affine_warp(moving, A(p))`` and ``target`` the agent's :meth:`~RigidAgent.rewards`; without,
    items are ``fixed``, ``moving``, ``truth`` (test pairs; roll-outs start from the identity).
    ``seed``: fixed per-item seeds (held-out sets); ``None`` draws fresh states every time.
    """

    def __init__(self, images: torch.Tensor, size: int = 1000, agent: RigidAgent | None = None, max_rotation: float = 20.0,
                 max_translation: float = 8.0, seed: int | None = None):
        self.images = check_image("RigidPairs", "images", images, ndim=2)
        self.size, self.agent, self.seed = size, agent, seed
        self.max_rotation, self.max_translation = float(max_rotation), float(max_translation)

    def __len__(self) -> int:
        return self.size

    def _uniform(self, g: torch.Generator | None) -> torch.Tensor:
        u = 2 * torch.rand(1, 3, generator=g) - 1
        return u * torch.tensor([[self.max_rotation, self.max_translation, self.max_translation]])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i) if self.seed is not None else None
        k = int(torch.randint(0, len(self.images), (), generator=g))
        fixed = self.images[k:k + 1]
        shape = tuple(fixed.shape[2:])
        truth = self._uniform(g)
        moving = affine_warp(fixed, torch.linalg.inv(rigid_from_params(truth, shape)), padding_mode="zeros")
        if self.agent is None:
            return {"fixed": fixed[0], "moving": moving[0], "truth": truth[0]}
        p = self._uniform(g)
        current = affine_warp(moving, rigid_from_params(p, shape))
        return {"fixed": fixed[0], "moving": current[0], "target": self.agent.rewards(p, truth)[0]}


def train_agent(agent: RigidAgent, images: torch.Tensor, steps: int = 500, val_images: torch.Tensor | None = None,
                **train_kwargs: Any):
    """Train the agent's Q-network by supervised Q-learning on random states of ``images`` (true transforms
    and states in the agent's range) with the one training loop (:func:`regedu.learning.train`,
    objective ``"regression"``; ``train_kwargs`` such as ``lr``, ``batch_size``, ``device`` go there).
    Returns the history; ``val_images`` adds validation (``mse``, ``argmax_accuracy``: how often the
    best predicted action is the best action)."""
    from .train import train

    ranges = dict(max_rotation=agent.max_rotation, max_translation=agent.max_translation)
    data = RigidPairs(images, size=max(steps, 1) * train_kwargs.get("batch_size", 4), agent=agent, **ranges)
    val = None
    if val_images is not None:
        val = RigidPairs(val_images, size=64, agent=agent, seed=1, **ranges)
    return train(agent.qnet, data, "regression", steps=steps, val_data=val, **train_kwargs)
