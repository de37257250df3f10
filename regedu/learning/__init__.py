"""Learning-based registration: networks, one training loop, objectives, STN, learned similarity, RL.

Sections A (deep iterative: learned similarity, reinforcement learning), B (supervised, weakly
supervised) and C (unsupervised, diffeomorphic, multi-stage, cycle-consistent) of the lecture, and
spatial transformer networks. Import it explicitly: ``from regedu import learning`` /
``import regedu.learning as rl``.
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
