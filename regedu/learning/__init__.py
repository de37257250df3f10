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

Objectives: ``"supervised"``, ``"weak"``, ``"unsupervised"``, ``"diffeomorphic"``, ``"cycle"``
(CycleMorph's image-space cycle consistency), ``"inverse_consistent"`` (round-trip displacement),
``"classification"``, ``"regression"`` (:mod:`.objectives`); the building blocks: :mod:`.layers`;
models: :mod:`.networks`, :mod:`.stn`, :mod:`.similarity_net`, :mod:`.rl` (rigid and deformable
agents), :mod:`.features` (autoencoder features as a similarity), :mod:`.error_estimation`,
:mod:`.probabilistic` (variational registration), :mod:`.adversarial` (discriminators as alignment
judge or deformation regulariser), :mod:`.patches` (patch-based training, tiled inference);
shipped weights: :mod:`.pretrained`; the loop, validation and checkpoints: :mod:`.train`.
"""

from . import error_estimation, layers, pretrained
from .adversarial import AlignmentDiscriminator, DeformationDiscriminator, alignment_score, train_adversarial
from .features import PatchAutoencoder, feature_similarity, train_autoencoder
from .layers import ConvBlock, ConvRegressor, build_model, register_model, strided_encoder
from .networks import AffineNet, IdentityNet, RegistrationChain, RegistrationNet, UNet, multi_stage
from .objectives import (
    Classification,
    CycleConsistent,
    Diffeomorphic,
    InverseConsistent,
    Objective,
    Regression,
    Supervised,
    UnknownKeywordError,
    Unsupervised,
    WeaklySupervised,
    get_objective,
    registration_metrics,
)
from .patches import PatchDataset, blend_window, predict, tile_starts
from .probabilistic import Probabilistic, ProbabilisticNet, kl_divergence
from .rl import (
    ActionAgent,
    AgentResult,
    DeformableAgent,
    DeformablePairs,
    QNetwork,
    RigidAgent,
    RigidPairs,
    deformation_modes,
    train_agent,
)
from .similarity_net import MisalignedPairs, SimilarityNet, train_similarity
from .stn import CNNClassifier, SpatialTransformer, STNClassifier
from .train import Checkpoint, History, evaluate, load_checkpoint, save_checkpoint, train

__all__ = [
    # building blocks and networks
    "layers", "ConvBlock", "ConvRegressor", "strided_encoder", "register_model", "build_model",
    "UNet", "RegistrationNet", "AffineNet", "IdentityNet", "RegistrationChain", "multi_stage",
    # objectives
    "Objective", "Supervised", "WeaklySupervised", "Unsupervised", "Diffeomorphic", "CycleConsistent",
    "InverseConsistent", "Classification", "Regression", "get_objective", "registration_metrics", "UnknownKeywordError",
    # the training loop
    "train", "evaluate", "History", "Checkpoint", "save_checkpoint", "load_checkpoint", "pretrained",
    # spatial transformer networks
    "SpatialTransformer", "STNClassifier", "CNNClassifier",
    # deep iterative: learned similarity, error estimation, autoencoder features, agents
    "SimilarityNet", "MisalignedPairs", "train_similarity", "error_estimation",
    "PatchAutoencoder", "feature_similarity", "train_autoencoder",
    "ActionAgent", "RigidAgent", "DeformableAgent", "QNetwork", "RigidPairs", "DeformablePairs", "AgentResult",
    "deformation_modes", "train_agent",
    # probabilistic and adversarial registration, patches
    "ProbabilisticNet", "Probabilistic", "kl_divergence",
    "AlignmentDiscriminator", "DeformationDiscriminator", "alignment_score", "train_adversarial",
    "PatchDataset", "predict", "tile_starts", "blend_window",
]
