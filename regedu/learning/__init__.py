"""Learning-based registration: networks, one training loop, objectives, STN, learned similarity, RL.

Sections A (deep iterative: learned similarity, reinforcement learning), B (supervised, weakly
supervised) and C (unsupervised, diffeomorphic, multi-stage, cycle-consistent) of the lecture, and
spatial transformer networks (``from regedu import learning as L``).

Quick start (2D brain slices, about half a minute on one CPU core)::

    from regedu import learning as L
    from regedu.data import PairDataset, brain_slice

    brain = brain_slice(size=64)
    train_pairs = PairDataset(brain, mode="train", size=10_000)   # fresh random pairs on the fly
    test_pairs = PairDataset(brain, mode="eval", size=16)         # held out, fixed seeds
    net = L.multi_stage(2, affine=False, scales=(0.5, 0.5))       # two half-resolution U-Nets, chained
    history = L.train(net, train_pairs, "unsupervised", steps=500, lr=3e-3, val_data=test_pairs, val_every=100)
    history.plot()                                                # loss, Dice, folding per validation
    out = net(fixed, moving)                                      # {"dvf", "moved", ...}

Objectives: ``"supervised"``, ``"weak"``, ``"unsupervised"``, ``"diffeomorphic"``, ``"cycle"``,
``"classification"``, ``"regression"`` (:mod:`.objectives`); models: :mod:`.networks`, :mod:`.stn`,
:mod:`.similarity_net`, :mod:`.rl`; the loop, validation and checkpoints: :mod:`.train`.
"""

from .networks import AffineNet, ConvBlock, IdentityNet, RegistrationChain, RegistrationNet, UNet, build_model, multi_stage
from .objectives import (
    Classification,
    CycleConsistent,
    Diffeomorphic,
    Objective,
    Regression,
    Supervised,
    Unsupervised,
    WeaklySupervised,
    get_objective,
    registration_metrics,
)
from .stn import CNNClassifier, SpatialTransformer, STNClassifier
from .train import Checkpoint, History, evaluate, load_checkpoint, save_checkpoint, train

__all__ = [
    "UNet", "RegistrationNet", "AffineNet", "IdentityNet", "RegistrationChain", "multi_stage", "ConvBlock", "build_model",
    "Objective", "Supervised", "WeaklySupervised", "Unsupervised", "Diffeomorphic", "CycleConsistent", "Classification",
    "Regression", "get_objective", "registration_metrics",
    "SpatialTransformer", "STNClassifier", "CNNClassifier",
    "train", "evaluate", "History", "Checkpoint", "save_checkpoint", "load_checkpoint",
]

from .rl import AgentResult, QNetwork, RigidAgent, RigidPairs, train_agent  # noqa: E402
from .similarity_net import MisalignedPairs, SimilarityNet, train_similarity  # noqa: E402

__all__ += ["RigidAgent", "QNetwork", "RigidPairs", "AgentResult", "train_agent", "SimilarityNet", "MisalignedPairs", "train_similarity"]
