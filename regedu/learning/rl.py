r"""Reinforcement-learning agents for registration (lecture section A): rigid and low-dimensional deformable.

Registration as a sequence of small moves, a **Markov decision process** (MDP):

* **state** :math:`s_t` = the pair (fixed image, moving image resampled by the current parameters :math:`p_t`);
* **actions** :math:`a`: change one parameter by a fixed step, :math:`p_{t+1} = p_t + \delta_a` (the
  transition is deterministic);
* **reward** :math:`r_t = D(p_t, p^*) - D(p_{t+1}, p^*)`: how much the action reduced the distance
  :math:`D` to the true parameters :math:`p^*` (known during training only);
* **return** :math:`G_t = \sum_{k \ge 0} \gamma^k r_{t+k}` with a **discount** :math:`\gamma \in [0, 1]`;
* the action value :math:`Q(s, a) = \mathbb{E}[G_t \mid s_t = s, a_t = a]` obeys the **Bellman equation**
  :math:`Q^*(s, a) = r(s, a) + \gamma \max_{a'} Q^*(s', a')`; deep Q-learning (DQN) regresses
  :math:`Q_\theta(s, a)` onto the bootstrapped target :math:`r + \gamma \max_{a'} Q_{\theta^-}(s', a')`
  on states it visits while **exploring** (:math:`\varepsilon`-greedy actions, a replay memory).

**The simplification used here** (the "greedy supervised" training of Liao et al., 2017, also used
by Krebs et al., 2017): :math:`\gamma = 0`. The Q-value of an action is then its one-step reward,
which the ground truth gives in closed form for *any* state, so training is plain supervised
regression of :math:`Q_\theta(s, \cdot)` onto :math:`r(s, \cdot)` on states drawn at random from the
training range: no bootstrapping, no exploration, no replay memory. Because the reward is the
decrease of a distance, rewards telescope (:math:`\sum_t r_t = D(p_0) - D(p_T)`) and acting
greedily, :math:`a_t = \arg\max_a Q_\theta(s_t, a)`, moves toward the truth as long as the network
is right. Training runs through the one loop, :func:`regedu.learning.train` (``"regression"``).

Two agents share this machinery (:class:`ActionAgent`):

* :class:`RigidAgent`: :math:`p = (\phi, t_0, t_1)` (degrees, voxels), :math:`A(p)` =
  :func:`regedu.rigid_matrix` about the image centre, ``moved = affine_warp(moving, A(p))``, and
  :math:`D(p, p^*) = \frac{1}{|P|} \sum_{x \in P} \| A(p)\,x - A(p^*)\,x \|` over a grid of points
  :math:`P` (Liao et al., 2017).
* :class:`DeformableAgent`: :math:`p \in \mathbb{R}^K` are the coefficients of :math:`K` deformation
  modes, :math:`u(p) = \sum_k p_k m_k`, ``moved = warp(moving, u(p))``, and :math:`D(p, p^*)` is the mean
  length of :math:`u(p) - u(p^*)` over the image (Krebs et al., 2017, who use the principal modes of
  a statistical deformation model: :func:`deformation_modes` builds such modes by PCA of random
  B-spline fields).

References: Liao et al. (2017), An artificial agent for robust image registration, AAAI;
Krebs et al. (2017), Robust non-rigid registration through agent-based action learning, MICCAI;
Mnih et al. (2015), Human-level control through deep reinforcement learning, Nature (DQN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .._checks import as_float, check_image, check_number, check_same_spatial
from ..fields import random_bspline_dvf
from ..spatial_transformer import affine_warp, warp
from ..transforms import rigid_matrix
from .layers import ConvRegressor, check_channels, check_features, module_dtype, pair_input, register_model

STOP_REASONS = ("no action predicted to help", "would revisit a state", "step limit")


def rigid_from_params(p: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(B, 3)`` parameters (angle in degrees, t0, t1 in voxels) -> ``(B, 3, 3)`` rigid matrices about the image centre."""
    centre = [(s - 1) / 2 for s in shape]
    q = torch.cat([p[:, :1] * (math.pi / 180), p[:, 1:]], dim=1)
    return rigid_matrix(q, center=centre)


def _check_steps(fn: str, steps: Sequence[float]) -> list[float]:
    try:
        values = [check_number(fn, "steps", s, low=0, low_inclusive=False) for s in steps]
    except TypeError:
        raise TypeError(f"{fn}: steps must be a sequence of positive numbers, got {steps!r}") from None
    if not values:
        raise ValueError(f"{fn}: steps must contain at least one positive step size, got {steps!r}")
    return values


def axis_actions(n_params: int, steps: Sequence[float] = (1.0, 4.0)) -> torch.Tensor:
    """Actions ``(2 * n_params * len(steps), n_params)``: for every step ``s`` and parameter ``k``, :math:`\\pm s` along ``k``."""
    n_params = check_number("axis_actions", "n_params", n_params, low=1, integer=True)
    acts = []
    for s in _check_steps("axis_actions", steps):
        for k in range(n_params):
            for sign in (1.0, -1.0):
                a = [0.0] * n_params
                a[k] = sign * s
                acts.append(a)
    return torch.tensor(acts)


def default_actions(steps: Sequence[float] = (1.0, 4.0)) -> torch.Tensor:
    """Rigid actions ``(A, 3)``: for every step size ``s``, :math:`\\pm s` degrees and :math:`\\pm s` voxels along each axis."""
    return axis_actions(3, steps)


@register_model
class QNetwork(nn.Module):
    """Q-network: a convolutional regressor on the (fixed, current moved) pair -> one value per action ``(B, A)``.

    Inputs ``(B, channels, H, W)`` of any dtype (converted to the network's, see :func:`~regedu.learning.layers.pair_input`).
    """

    def __init__(self, n_actions: int = 12, channels: int = 1, features: Sequence[int] = (16, 32, 64, 64), hidden: int = 128,
                 norm: str | None = "instance"):
        super().__init__()
        n_actions = check_number("QNetwork", "n_actions", n_actions, low=1, integer=True)
        self.channels = check_channels("QNetwork", "channels", channels)
        hidden = check_number("QNetwork", "hidden", hidden, low=1, integer=True)
        feats = check_features("QNetwork", features)
        self.regressor = ConvRegressor(2, 2 * self.channels, n_actions, feats, hidden, pool=4, norm=norm)
        self.config = dict(n_actions=n_actions, channels=self.channels, features=list(feats), hidden=hidden, norm=norm)

    def forward(self, fixed: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        return self.regressor(pair_input("QNetwork", fixed, moved, 2, self.channels, module=self))


@dataclass
class AgentResult:
    """A roll-out of an :class:`ActionAgent`.

    Attributes:
        matrix: the final rigid matrices ``(B, 3, 3)`` (:class:`RigidAgent`; ``None`` otherwise).
        params: final parameters ``(B, P)``.
        moved: the moving image warped by the final parameters ``(B, C, H, W)``.
        trajectory: parameters after every step ``(T+1, B, P)`` (``T`` = steps run until every pair stopped).
        actions: the chosen action index per step ``(T, B)``; ``-1`` once a pair has stopped.
        distances: :math:`D(p_t, p^*)` per step ``(T+1, B)`` in voxels when the truth was given, else ``None``.
        steps_taken: number of actions each pair took ``(B,)``.
        stop_reasons: why each pair stopped, one of :data:`STOP_REASONS` per pair.
        dvf: the final displacement field ``(B, 2, H, W)`` (:class:`DeformableAgent`; ``None`` otherwise).
    """

    matrix: torch.Tensor | None
    params: torch.Tensor
    moved: torch.Tensor
    trajectory: torch.Tensor
    actions: torch.Tensor
    distances: torch.Tensor | None = None
    steps_taken: torch.Tensor | None = None
    stop_reasons: list[str] = field(default_factory=list)
    dvf: torch.Tensor | None = None


class ActionAgent:
    r"""A greedy agent that registers by discrete moves of a parameter vector :math:`p \in \mathbb{R}^P`.

    Subclasses define the transformation (:meth:`transform`) and the distance to the truth
    (:meth:`distance`); this class provides the rewards (Q-value targets with :math:`\gamma = 0`),
    the greedy roll-out (:meth:`register`) and the parameter box :math:`|p_k| \le` ``bound[k]`` that the
    agent is trained on and never leaves (its Q-network knows nothing about states outside).

    Args:
        shape: image size ``(H, W)`` the agent works on.
        actions: ``(A, P)`` parameter steps.
        qnet: the Q-network (default a :class:`QNetwork` with ``A`` outputs).
        bound: ``(P,)`` half-widths of the parameter box.
    """

    def __init__(self, shape: Sequence[int], actions: torch.Tensor, qnet: QNetwork | None, bound: torch.Tensor):
        name = type(self).__name__
        try:
            self.shape = tuple(check_number(name, "shape", s, low=4, integer=True) for s in shape)
        except TypeError:
            raise TypeError(f"{name}: shape must be a sequence of 2 integers (H, W), got {shape!r}") from None
        if len(self.shape) != 2:
            raise ValueError(f"{name}: shape must be 2D (H, W), got {shape!r}")
        self.bound = torch.as_tensor(bound, dtype=torch.float32)
        P = self.bound.numel()
        acts = torch.as_tensor(actions, dtype=torch.float32)
        if acts.dim() != 2 or acts.shape[1] != P or acts.shape[0] == 0:
            raise ValueError(f"{name}: actions must have shape (A, {P}) with A >= 1 (one step per parameter), got {tuple(acts.shape)}")
        if not bool(torch.isfinite(acts).all()) or bool((acts.abs().sum(1) == 0).any()):
            raise ValueError(f"{name}: every action must be a finite, non-zero parameter step")
        self.actions = acts
        self.qnet = qnet if qnet is not None else QNetwork(len(acts))
        n_out = self.qnet.config.get("n_actions") if hasattr(self.qnet, "config") else None
        if n_out is not None and n_out != len(acts):
            raise ValueError(f"{name}: qnet has {n_out} outputs but there are {len(acts)} actions")

    # -- to be defined by a subclass ------------------------------------------------------------
    def transform(self, moving: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``moving`` ``(B, C, H, W)`` resampled by the parameters ``p`` ``(B, P)``."""
        raise NotImplementedError

    def distance(self, p: torch.Tensor, p_true: torch.Tensor) -> torch.Tensor:
        """:math:`D(p, p^*)` in voxels, ``(B,)``."""
        raise NotImplementedError

    def _extras(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    # -- shared ---------------------------------------------------------------------------------
    def rewards(self, p: torch.Tensor, p_true: torch.Tensor) -> torch.Tensor:
        """Distance reduction of every action, ``(B, A)``: the Q-value targets (discount 0)."""
        acts = self.actions.to(p)
        d0 = self.distance(p, p_true)
        B, A = p.shape[0], acts.shape[0]
        moved = (p[:, None] + acts[None]).reshape(B * A, -1)
        d1 = self.distance(moved, p_true.repeat_interleave(A, 0)).reshape(B, A)
        return d0[:, None] - d1

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` parameter vectors drawn uniformly from the agent's box, ``(n, P)``."""
        return (2 * torch.rand(n, self.bound.numel(), generator=generator) - 1) * self.bound

    @torch.no_grad()
    def register(self, fixed: torch.Tensor, moving: torch.Tensor, steps: int = 60, truth: torch.Tensor | None = None,
                 stop: bool = True) -> AgentResult:
        """Register ``moving`` to ``fixed`` (``(B, C, H, W)``, any dtype) greedily from :math:`p = 0`.

        Every step applies the action with the highest Q-value among those that keep the parameters
        in the agent's box. With ``stop=True`` a pair **stops** as soon as no action has a positive
        predicted value (the network predicts that nothing helps: usually the agent is within one
        step of the truth) or the chosen action would return to a state it has visited (an
        oscillation between two states around the optimum); so roll-outs usually end long before
        ``steps``. ``truth`` ``(B, P)`` records the distances to the true parameters.
        """
        name = f"{type(self).__name__}.register"
        steps = check_number(name, "steps", steps, low=0, integer=True)
        fixed = check_image(name, "fixed", fixed, ndim=2)
        moving = check_image(name, "moving", moving, ndim=2)
        check_same_spatial(name, "fixed", fixed, "moving", moving)
        if fixed.shape[0] != moving.shape[0]:
            raise ValueError(f"{name}: fixed and moving must have the same batch size, got {fixed.shape[0]} and {moving.shape[0]}")
        if tuple(fixed.shape[2:]) != self.shape:
            raise ValueError(f"{name}: images must be {self.shape} (the agent's shape), got {tuple(fixed.shape[2:])}; "
                             "resize them with regedu.resize")
        self.qnet.eval()
        dev = next(self.qnet.parameters()).device
        dtype = module_dtype(self.qnet)
        fixed, moving = as_float(name, "fixed", fixed, dtype).to(dev), as_float(name, "moving", moving, dtype).to(dev)
        B, P = fixed.shape[0], self.bound.numel()
        if truth is not None:
            truth = torch.as_tensor(truth)
            if truth.shape != (B, P):
                raise ValueError(f"{name}: truth must have shape (B, {P}) = ({B}, {P}), got {tuple(truth.shape)}")
            truth = truth.to(dev, torch.float32)
        acts, bound = self.actions.to(dev), self.bound.to(dev)
        p = torch.zeros(B, P, device=dev)
        active = torch.ones(B, dtype=torch.bool, device=dev)
        taken = torch.zeros(B, dtype=torch.long)
        reasons = [STOP_REASONS[2]] * B
        traj, chosen, seen = [p.clone()], [], [{tuple(row)} for row in p.round(decimals=3).tolist()]
        for _ in range(steps):
            q = self.qnet(fixed, self.transform(moving, p)).float()
            inside = ((p[:, None] + acts[None]).abs() <= bound + 1e-6).all(-1)  # (B, A)
            q = q.masked_fill(~inside, -math.inf)
            a = q.argmax(1)
            new = p + acts[a]
            for b in range(B):
                if not active[b]:
                    continue
                key = tuple(new[b].round(decimals=3).tolist())
                if stop and q[b, a[b]] <= 0:
                    active[b], reasons[b] = False, STOP_REASONS[0]
                elif stop and key in seen[b]:
                    active[b], reasons[b] = False, STOP_REASONS[1]
                else:
                    taken[b] += 1
                seen[b].add(key)
            p = torch.where(active[:, None], new, p)
            traj.append(p.clone())
            chosen.append(torch.where(active, a, torch.full_like(a, -1)))
            if not bool(active.any()):
                break
        trajectory = torch.stack(traj)
        dist = None if truth is None else torch.stack([self.distance(t, truth) for t in trajectory])
        extras = self._extras(p)
        return AgentResult(matrix=extras.get("matrix"), params=p, moved=self.transform(moving, p), trajectory=trajectory,
                           actions=torch.stack(chosen) if chosen else torch.empty(0, B, dtype=torch.long), distances=dist,
                           steps_taken=taken, stop_reasons=reasons, dvf=extras.get("dvf"))

    def to(self, device) -> "ActionAgent":
        self.qnet.to(device)
        return self

    def training_pairs(self, images: torch.Tensor, size: int, seed: int | None = None) -> Dataset:
        """Training states (``fixed``, ``moving`` = current moved image, ``target`` = rewards) from ``images``."""
        raise NotImplementedError


class RigidAgent(ActionAgent):
    """A greedy agent for 2D rigid registration (Liao et al., 2017): :math:`p = (\\phi, t_0, t_1)`.

    Args:
        shape: image size ``(H, W)`` the agent works on.
        actions: ``(A, 3)`` parameter steps (default :func:`default_actions`: ±1 and ±4 degrees/voxels).
        qnet: the Q-network (default a :class:`QNetwork` with ``len(actions)`` outputs).
        points: number of grid points per axis of :math:`P` for the distance :math:`D` (>= 2).
        max_rotation, max_translation: the range of transforms the agent is trained on (degrees,
            voxels; :func:`train_agent` draws true transforms and states from it) and the box its
            roll-outs stay in: a misalignment outside it cannot be undone by this agent.
    """

    def __init__(self, shape: Sequence[int] = (64, 64), actions: torch.Tensor | None = None, qnet: QNetwork | None = None,
                 points: int = 8, max_rotation: float = 20.0, max_translation: float = 8.0):
        self.max_rotation = check_number("RigidAgent", "max_rotation", max_rotation, low=0, high=180, low_inclusive=False)
        self.max_translation = check_number("RigidAgent", "max_translation", max_translation, low=0, low_inclusive=False)
        points = check_number("RigidAgent", "points", points, low=2, integer=True)
        acts = default_actions() if actions is None else actions
        super().__init__(shape, acts, qnet, torch.tensor([self.max_rotation, self.max_translation, self.max_translation]))
        lin = [torch.linspace(0.1 * (s - 1), 0.9 * (s - 1), points) for s in self.shape]
        self.points = torch.stack(torch.meshgrid(*lin, indexing="ij"), -1).reshape(-1, 2)

    def transform(self, moving: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return affine_warp(moving, rigid_from_params(p, self.shape).to(moving))

    def _extras(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"matrix": rigid_from_params(p, self.shape)}

    def distance(self, p: torch.Tensor, p_true: torch.Tensor) -> torch.Tensor:
        r""":math:`D(p, p^*)`: mean distance (voxels) between the points mapped by the two transforms, ``(B,)``."""
        both = rigid_from_params(torch.cat([p, p_true.to(p)]), self.shape)  # one call for both (it is the slow part)
        A, B = both[: len(p)], both[len(p):]
        x = self.points.to(A)
        d = x @ (A[:, :2, :2] - B[:, :2, :2]).transpose(1, 2) + (A[:, None, :2, 2] - B[:, None, :2, 2])
        return d.pow(2).sum(-1).sqrt().mean(-1)

    def training_pairs(self, images: torch.Tensor, size: int, seed: int | None = None) -> Dataset:
        return RigidPairs(images, size=size, agent=self, max_rotation=self.max_rotation, max_translation=self.max_translation, seed=seed)


def deformation_modes(shape: Sequence[int], n_modes: int = 4, samples: int = 200, spacing: float = 16.0,
                      max_displacement: float = 4.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A low-dimensional deformation model: the principal modes of random smooth B-spline fields.

    Draws ``samples`` fields :math:`u_i` with :func:`regedu.random_bspline_dvf` (control-point
    ``spacing`` and largest displacement ``max_displacement`` in voxels), stacks them as rows of
    :math:`X` (``samples x 2HW``) and takes its SVD :math:`X = U S V^\top` (PCA about zero, the mean of
    the random fields). Mode :math:`k` is :math:`m_k = s_k v_k / \sqrt{N}`, so that a field of the
    model, :math:`u(p) = \sum_k p_k m_k`, with coefficients :math:`p_k \sim \mathcal{N}(0, 1)` has
    the variance of the sample along each mode. As the statistical deformation model of Krebs et al.
    (2017), here built from synthetic fields instead of registrations of training subjects.

    Returns ``modes`` ``(n_modes, 2, H, W)`` (voxels per unit coefficient) and ``explained`` ``(n_modes,)``,
    the fraction of the sample's variance that each mode explains.
    """
    fn = "deformation_modes"
    n_modes = check_number(fn, "n_modes", n_modes, low=1, integer=True)
    samples = check_number(fn, "samples", samples, low=n_modes, integer=True)
    spacing = check_number(fn, "spacing", spacing, low=0, low_inclusive=False)
    max_displacement = check_number(fn, "max_displacement", max_displacement, low=0, low_inclusive=False)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ValueError(f"{fn}: shape must be 2D (H, W), got {shape!r}")
    u = random_bspline_dvf(shape, spacing=spacing, max_displacement=max_displacement, batch=samples, seed=seed)
    X = u.reshape(samples, -1).double()
    _, S, Vh = torch.linalg.svd(X, full_matrices=False)
    modes = (S[:n_modes, None] * Vh[:n_modes] / math.sqrt(samples)).float().reshape(n_modes, 2, *shape)
    explained = (S[:n_modes] ** 2 / (S**2).sum()).float()
    return modes, explained


class DeformableAgent(ActionAgent):
    r"""A greedy agent for deformable registration with a low-dimensional model (Krebs et al., 2017).

    :math:`p \in \mathbb{R}^K` are the coefficients of ``modes`` :math:`m_k` (e.g. from
    :func:`deformation_modes`), :math:`u(p) = \sum_k p_k m_k`, ``moved = warp(moving, u(p))``. The
    actions move one coefficient by :math:`\pm` each of ``steps``; the box is :math:`|p_k| \le` ``max_coefficient``.
    :math:`D(p, p^*) = \frac{1}{|\Omega|}\sum_x \|u(p)(x) - u(p^*)(x)\|` (voxels).

    Args:
        modes: ``(K, 2, H, W)`` displacement modes in voxels per unit coefficient.
        steps: action step sizes in coefficient units (default 0.25 and 1).
        qnet: the Q-network (default a :class:`QNetwork` with ``2 K len(steps)`` outputs).
        max_coefficient: half-width of the box of coefficients (in units of the modes).
    """

    def __init__(self, modes: torch.Tensor, steps: Sequence[float] = (0.25, 1.0), qnet: QNetwork | None = None,
                 max_coefficient: float = 2.0):
        if not isinstance(modes, torch.Tensor) or modes.dim() != 4 or modes.shape[1] != 2 or modes.shape[0] == 0:
            got = tuple(modes.shape) if isinstance(modes, torch.Tensor) else type(modes).__name__
            raise ValueError(f"DeformableAgent: modes must be a tensor (K, 2, H, W) with K >= 1, got {got}")
        if not bool(torch.isfinite(modes).all()):
            raise ValueError("DeformableAgent: modes must be finite")
        self.modes = as_float("DeformableAgent", "modes", modes).float()
        self.max_coefficient = check_number("DeformableAgent", "max_coefficient", max_coefficient, low=0, low_inclusive=False)
        K = modes.shape[0]
        super().__init__(tuple(modes.shape[2:]), axis_actions(K, steps), qnet, torch.full((K,), self.max_coefficient))

    def field(self, p: torch.Tensor) -> torch.Tensor:
        """:math:`u(p) = \\sum_k p_k m_k`, ``(B, 2, H, W)`` voxels, for ``p`` ``(B, K)``."""
        return torch.einsum("bk,kchw->bchw", p, self.modes.to(p))

    def transform(self, moving: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return warp(moving, self.field(p.to(moving.device)).to(moving.dtype))

    def _extras(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"dvf": self.field(p)}

    def distance(self, p: torch.Tensor, p_true: torch.Tensor) -> torch.Tensor:
        d = self.field(p - p_true.to(p))
        return (d[:, 0] ** 2 + d[:, 1] ** 2).sqrt().flatten(1).mean(1)  # (faster than .norm(dim=1) on the CPU)

    def training_pairs(self, images: torch.Tensor, size: int, seed: int | None = None) -> Dataset:
        return DeformablePairs(images, self, size=size, states=True, seed=seed)

    def to(self, device) -> "DeformableAgent":
        self.qnet.to(device)
        self.modes = self.modes.to(device)
        return self


class RigidPairs(Dataset):
    """Rigidly misaligned pairs with known truth, for training and testing :class:`RigidAgent`.

    ``images``: ``(N, 1, H, W)`` source images (e.g. synthetic subjects of a brain slice). Item ``i``:
    ``fixed`` = one image, true parameters :math:`p^*` (rotation up to ``max_rotation`` degrees,
    translation up to ``max_translation`` voxels), ``moving = affine_warp(fixed, A(p*)^{-1})`` (so that
    ``affine_warp(moving, A(p*)) ~= fixed``; what the misalignment moves out of the field of view is lost
    and filled with zeros). With an ``agent``, items are training states: a random
    current estimate :math:`p` within the same ranges, ``moving`` is the current moved image
    ``affine_warp(moving, A(p))`` and ``target`` the agent's :meth:`~ActionAgent.rewards`; without,
    items are ``fixed``, ``moving``, ``truth`` (test pairs; roll-outs start from the identity).
    ``seed``: fixed per-item seeds (held-out sets); ``None`` draws fresh states every time.
    """

    def __init__(self, images: torch.Tensor, size: int = 1000, agent: RigidAgent | None = None, max_rotation: float = 20.0,
                 max_translation: float = 8.0, seed: int | None = None):
        self.images = as_float("RigidPairs", "images", check_image("RigidPairs", "images", images, ndim=2))
        self.size = check_number("RigidPairs", "size", size, low=1, integer=True)
        self.seed = None if seed is None else check_number("RigidPairs", "seed", seed, low=0, integer=True)
        self.agent = agent
        self.max_rotation = check_number("RigidPairs", "max_rotation", max_rotation, low=0)
        self.max_translation = check_number("RigidPairs", "max_translation", max_translation, low=0)

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


class DeformablePairs(Dataset):
    """Pairs deformed by the modes of a :class:`DeformableAgent`, with known coefficients.

    Item ``i``: ``moving`` = one of ``images``, true coefficients :math:`p^*` uniform in the agent's box,
    ``fixed = warp(moving, u(p*))`` (so ``u(p*)`` registers the pair exactly). With ``states=True``
    (training) ``moving`` is replaced by the current moved image ``warp(moving, u(p))`` for a random
    :math:`p` in the box and ``target`` holds the rewards of every action; otherwise items are
    ``fixed``, ``moving``, ``truth`` (test pairs).
    """

    def __init__(self, images: torch.Tensor, agent: DeformableAgent, size: int = 1000, states: bool = False,
                 seed: int | None = None):
        self.images = as_float("DeformablePairs", "images", check_image("DeformablePairs", "images", images, ndim=2))
        if tuple(self.images.shape[2:]) != agent.shape:
            raise ValueError(f"DeformablePairs: images must be {agent.shape} (the agent's shape), got {tuple(self.images.shape[2:])}")
        self.agent, self.states = agent, bool(states)
        self.size = check_number("DeformablePairs", "size", size, low=1, integer=True)
        self.seed = None if seed is None else check_number("DeformablePairs", "seed", seed, low=0, integer=True)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i) if self.seed is not None else None
        k = int(torch.randint(0, len(self.images), (), generator=g))
        moving = self.images[k:k + 1]
        modes = self.agent.modes.cpu()
        truth = self.agent.sample_params(1, g)
        fixed = warp(moving, torch.einsum("bk,kchw->bchw", truth, modes))
        if not self.states:
            return {"fixed": fixed[0], "moving": moving[0], "truth": truth[0]}
        p = self.agent.sample_params(1, g)
        current = warp(moving, torch.einsum("bk,kchw->bchw", p, modes))
        return {"fixed": fixed[0], "moving": current[0], "target": self.agent.rewards(p, truth)[0]}


def train_agent(agent: ActionAgent, images: torch.Tensor, steps: int = 500, val_images: torch.Tensor | None = None,
                **train_kwargs: Any):
    """Train the agent's Q-network by greedy supervised Q-learning (discount 0) on random states of
    ``images`` (true transforms and states in the agent's box) with the one training loop
    (:func:`regedu.learning.train`, objective ``"regression"``; ``train_kwargs`` such as ``lr``,
    ``batch_size``, ``device`` go there). Returns the history; ``val_images`` adds validation on 64
    fixed states (``mse``, ``argmax_accuracy``: how often the best predicted action is the best action)."""
    from .train import train

    steps = check_number("train_agent", "steps", steps, low=1, integer=True)
    batch = check_number("train_agent", "batch_size", train_kwargs.get("batch_size", 4), low=1, integer=True)
    data = agent.training_pairs(images, size=steps * batch)
    val = agent.training_pairs(val_images, size=64, seed=1) if val_images is not None else None
    return train(agent.qnet, data, "regression", steps=steps, val_data=val, **train_kwargs)
