r"""Building blocks of every network in :mod:`regedu.learning` (as VoxelMorph's ``layers.py``).

Small public pieces, each usable on its own, that the registration networks (:mod:`.networks`),
the spatial transformer networks (:mod:`.stn`), the learned similarity (:mod:`.similarity_net`)
and the RL Q-network (:mod:`.rl`) are assembled from:

* :func:`conv_class` / :func:`norm_layer`: the 2D or 3D convolution and normalisation layers;
* :class:`ConvBlock`: ``conv 3^ndim (stride s) -> [norm] -> LeakyReLU(0.2)``;
* :func:`strided_encoder`: conv blocks that halve the resolution after the first;
* :class:`ConvRegressor`: encoder -> pooling to a small grid -> MLP (affine parameters, Q-values);
* :func:`pair_input`: the checked, dtype-converted ``cat([fixed, moving], dim=1)`` every pair network reads;
* :func:`check_ndim`, :func:`check_channels`, :func:`check_features`: constructor-argument checks;
* :func:`register_model` / :func:`build_model`: the registry that rebuilds a model from its class name
  and ``config`` (checkpoints, the stages of a :class:`~regedu.learning.RegistrationChain`).

**Dtypes** (the package's policy, :mod:`regedu._checks`): a network computes in the dtype of its
parameters (float32 unless converted with ``.double()``/``.half()``): integer, bool and other floating
inputs are converted to it on entry by :func:`pair_input`, so a ``uint8`` or NumPy ``float64`` image
works and the outputs are in the network's dtype.

Reference: Balakrishnan et al. (2019), VoxelMorph: a learning framework for deformable medical
image registration, IEEE TMI (its ``layers.py`` / ``networks.py`` split).
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence, TypeVar

import torch
import torch.nn as nn

from .._checks import as_float, check_choice, check_image, check_number, check_same_spatial

__all__ = [
    "conv_class", "norm_layer", "ConvBlock", "strided_encoder", "ConvRegressor", "pair_input", "module_dtype",
    "check_ndim", "check_channels", "check_features", "register_model", "build_model", "MODELS",
]


# --------------------------------------------------------------------------------------------
# argument checks of the constructors
# --------------------------------------------------------------------------------------------

def check_ndim(fn: str, ndim: object) -> int:
    """``ndim`` as an int, or ``ValueError`` unless it is 2 or 3 (the spatial dimensions of the course)."""
    if isinstance(ndim, bool) or not isinstance(ndim, int) or ndim not in (2, 3):
        raise ValueError(f"{fn}: ndim must be 2 or 3, got {ndim!r}")
    return int(ndim)


def check_channels(fn: str, name: str, value: object) -> int:
    """A channel count: an integer >= 1 (``channels=0`` builds a network that cannot see its input)."""
    return check_number(fn, name, value, low=1, integer=True)


def check_features(fn: str, features: Sequence[int], minimum: int = 1, name: str = "features") -> tuple[int, ...]:
    """Channel counts per level: at least ``minimum`` positive integers; returned as a tuple of ints."""
    try:
        feats = tuple(features)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be a sequence of positive channel counts, got {features!r}") from None
    ok = all(not isinstance(f, bool) and isinstance(f, (int, float)) and float(f) == int(f) and f >= 1 for f in feats)
    if len(feats) < minimum or not ok:
        raise ValueError(f"{fn}: {name} must be at least {minimum} positive channel counts, got {tuple(features)!r}")
    return tuple(int(f) for f in feats)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------

def conv_class(ndim: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """``nn.Conv2d`` for ``ndim=2``, ``nn.Conv3d`` for ``ndim=3``."""
    ndim = check_ndim("networks", ndim)
    return nn.Conv2d if ndim == 2 else nn.Conv3d


def norm_layer(ndim: int, kind: str | None, channels: int) -> nn.Module:
    """Normalisation after a convolution: ``None``/``"none"`` (identity), ``"batch"`` or ``"instance"``.

    Instance normalisation (per image and channel, with a learnt scale and shift) is computed as a
    group norm with one channel per group: the same numbers as ``nn.InstanceNorm*d(affine=True)``,
    several times faster on CPU, and the same in training and evaluation.
    """
    check_choice("networks", "norm", kind if kind is not None else "none", ("none", "batch", "instance"))
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "batch":
        return (nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d)(channels)
    return nn.GroupNorm(channels, channels)


class ConvBlock(nn.Sequential):
    """``conv 3^ndim (stride s, padding 1) -> [norm] -> LeakyReLU(0.2)``, the building block of every network here.

    Shapes: ``(B, in_channels, *S)`` -> ``(B, out_channels, *ceil(S / stride))``.
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int, stride: int = 1, norm: str | None = None):
        in_channels = check_channels("ConvBlock", "in_channels", in_channels)
        out_channels = check_channels("ConvBlock", "out_channels", out_channels)
        stride = check_number("ConvBlock", "stride", stride, low=1, integer=True)
        super().__init__(
            conv_class(ndim)(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            norm_layer(ndim, norm, out_channels),
            nn.LeakyReLU(0.2),
        )


def strided_encoder(ndim: int, in_channels: int, features: Sequence[int], norm: str | None = None) -> nn.Sequential:
    """:class:`ConvBlock` s with ``features`` channels: stride 1 for the first, 2 (halving the size) after.

    Shapes: ``(B, in_channels, *S)`` -> ``(B, features[-1], *S / 2**(len(features) - 1))`` (rounded up).
    """
    feats = check_features("strided_encoder", features)
    blocks, c = [], in_channels
    for i, f in enumerate(feats):
        blocks.append(ConvBlock(ndim, c, f, stride=1 if i == 0 else 2, norm=norm))
        c = f
    return nn.Sequential(*blocks)


class ConvRegressor(nn.Module):
    """Convolutional encoder -> adaptive average pooling to ``pool^ndim`` cells -> MLP -> ``out_features``.

    Pooling to a small grid (instead of one global average) keeps *where* features are, which a
    network needs to regress a translation. The last linear layer starts at zero weights with bias
    ``init_bias`` (e.g. the identity transform), so the initial output does not depend on the input.

    Shapes: ``(B, in_channels, *S)`` -> ``(B, out_features)``.
    """

    def __init__(
        self,
        ndim: int,
        in_channels: int,
        out_features: int,
        features: Sequence[int] = (16, 32, 64, 64),
        hidden: int = 64,
        pool: int = 4,
        norm: str | None = None,
        init_bias: torch.Tensor | None = None,
    ):
        super().__init__()
        ndim = check_ndim("ConvRegressor", ndim)
        feats = check_features("ConvRegressor", features)
        out_features = check_channels("ConvRegressor", "out_features", out_features)
        hidden = check_channels("ConvRegressor", "hidden", hidden)
        pool = check_number("ConvRegressor", "pool", pool, low=1, integer=True)
        self.encoder = strided_encoder(ndim, in_channels, feats, norm)
        c = feats[-1]
        self.pool = (nn.AdaptiveAvgPool2d if ndim == 2 else nn.AdaptiveAvgPool3d)(pool)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(c * pool**ndim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, out_features))
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        if init_bias is None:
            nn.init.zeros_(last.bias)
        else:
            with torch.no_grad():
                last.bias.copy_(init_bias.reshape(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(self.encoder(x)))


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------

def module_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a module computes in: that of its first floating parameter or buffer (float32 if none)."""
    for t in itertools.chain(module.parameters(), module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _module_device(module: nn.Module) -> torch.device | None:
    t = next(itertools.chain(module.parameters(), module.buffers()), None)
    return None if t is None else t.device


def pair_input(fn: str, fixed: torch.Tensor, moving: torch.Tensor, ndim: int, channels: int,
               module: nn.Module | None = None) -> torch.Tensor:
    """The input of a pair network: ``cat([fixed, moving], dim=1)``, ``(B, 2 * channels, *spatial)``, checked.

    Both images must be ``(B, channels, *spatial)`` with ``ndim`` spatial dimensions, the same spatial
    size and batch size, finite. With ``module`` given, they must be on the module's device and are
    converted to its dtype (:func:`module_dtype`; integer and bool images included); without it,
    integer, bool and half-precision images become float32.
    """
    fixed = check_image(fn, "fixed", fixed, ndim=ndim)
    moving = check_image(fn, "moving", moving, ndim=ndim)
    check_same_spatial(fn, "fixed", fixed, "moving", moving)
    if fixed.shape[0] != moving.shape[0]:
        raise ValueError(f"{fn}: fixed and moving must have the same batch size, got {fixed.shape[0]} and {moving.shape[0]}")
    if fixed.shape[1] != channels or moving.shape[1] != channels:
        raise ValueError(
            f"{fn}: fixed and moving must have {channels} channel(s) each (the model's `channels`), "
            f"got {fixed.shape[1]} and {moving.shape[1]}"
        )
    dtype = None
    if module is not None:
        device = _module_device(module)
        for name, t in (("fixed", fixed), ("moving", moving)):
            if device is not None and t.device != device:
                raise ValueError(f"{fn}: {name} is on {t.device} but the model's parameters are on {device}; "
                                 f"move the images with .to({str(device)!r}) (or the model with .to({str(t.device)!r}))")
        dtype = module_dtype(module)
    fixed = as_float(fn, "fixed", fixed, dtype)
    moving = as_float(fn, "moving", moving, dtype)
    return torch.cat([fixed, moving], dim=1)


# --------------------------------------------------------------------------------------------
# the model registry (checkpoints and chain specs rebuild models by class name)
# --------------------------------------------------------------------------------------------

MODELS: dict[str, type[nn.Module]] = {}
"""Every model class that :func:`build_model` can rebuild, by class name (filled by :func:`register_model`)."""

M = TypeVar("M", bound=type)


def register_model(cls: M) -> M:
    """Class decorator: make ``cls`` rebuildable by :func:`build_model` (and so by ``load_checkpoint``).

    A registered model stores its constructor arguments as a plain-Python dict in ``self.config``,
    so that ``build_model(type(m).__name__, m.config)`` builds an identical (untrained) model.
    """
    name = cls.__name__
    if name in MODELS and MODELS[name] is not cls:
        raise ValueError(f"register_model: a different model class named {name!r} is already registered "
                         f"({MODELS[name].__module__}.{name})")
    MODELS[name] = cls
    return cls


def build_model(name: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild a registered model from its class name and ``config`` (as saved in a checkpoint)."""
    if name not in MODELS:
        raise ValueError(f"build_model: unknown model class {name!r}; known: {', '.join(sorted(MODELS))} "
                         "(decorate a new model class with regedu.learning.layers.register_model)")
    if not isinstance(config, dict):
        raise TypeError(f"build_model: config must be a dict of constructor arguments, got {type(config).__name__}")
    return MODELS[name](**config)

