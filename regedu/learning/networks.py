r"""Registration networks: a U-Net that predicts a displacement (or velocity) field, an affine
regression network, and a multi-stage chain (affine, then deformable, coarse to fine).

Every network maps a pair ``(fixed, moving)`` of images ``(B, C, *spatial)`` (2D or 3D) to a
**registration output**, a dict with

* ``"dvf"``: the pull-back displacement ``u`` ``(B, ndim, *spatial)`` in voxels, such that
  ``moved = warp(moving, u)`` is aligned with ``fixed`` (:math:`M \circ \varphi`, :math:`\varphi = \mathrm{Id} + u`);
* ``"moved"``: ``warp(moving, u)``;
* ``"regularise"``: the list of fields the smoothness term acts on (the velocity of a diffeomorphic
  model, the DVF of a plain one, nothing for an affine stage);
* optionally ``"velocity"`` (diffeomorphic models), ``"matrix"`` (affine models, ``(B, ndim+1, ndim+1)``
  mapping fixed voxels to moving voxels) and ``"stages"`` (a chain's per-stage outputs).

The objectives in :mod:`regedu.learning.objectives` and the loop in :mod:`regedu.learning.train`
only rely on these keys, so any model that returns them can be trained.

References: Ronneberger et al. (2015), U-Net; Balakrishnan et al. (2019), VoxelMorph, IEEE TMI;
Dalca et al. (2018), diffeomorphic VoxelMorph (scaling and squaring), MICCAI; de Vos et al. (2019),
A deep learning framework for unsupervised affine and deformable image registration (DLIR), MedIA.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import transforms
from .._checks import as_float, check_image, check_number, check_pair
from ..fields import compose, integrate_velocity
from ..spatial_transformer import affine_to_dvf, affine_warp, resize, warp
from ..resampling import _resize_dvf
from .layers import (
    ConvBlock,
    ConvRegressor,
    build_model,
    check_channels,
    check_features,
    check_ndim,
    conv_class,
    module_dtype,
    norm_layer,
    pair_input,
    register_model,
    strided_encoder,
)

__all__ = ["UNet", "RegistrationNet", "AffineNet", "IdentityNet", "RegistrationChain", "multi_stage",
           # re-exported building blocks (defined in .layers)
           "ConvBlock", "ConvRegressor", "strided_encoder", "build_model", "register_model"]


# the building blocks live in .layers; the old private names stay as aliases for code that imports them
_conv = conv_class
_norm = norm_layer
_check_features = check_features
_pair_input = pair_input


@register_model
class UNet(nn.Module):
    r"""U-Net encoder-decoder with skip connections (Ronneberger et al., 2015), VoxelMorph-style.

    The encoder halves the resolution ``len(features) - 1`` times (stride-2 convolutions), the
    decoder upsamples (linear interpolation to the skip's size, so any input size works), concatenates
    the skip and convolves. A last convolution maps to ``out_channels``; its weights are drawn from
    :math:`\mathcal{N}(0, \text{final_init_std}^2)` and its bias is zero, so an untrained network
    predicts a field of almost zero (the identity transform) and training starts from there.

    Args:
        ndim: 2 or 3 spatial dimensions.
        in_channels: input channels (2 for a concatenated single-channel (fixed, moving) pair).
        out_channels: output channels (default ``ndim``: one displacement per axis).
        features: channels per resolution level, finest first, e.g. ``(16, 32, 32, 32)``
            (3 downsamplings: the input size should be divisible by 8 for exact halving; other sizes work too).
        decoder_features: channels of the decoder convolutions, coarsest first (default: the encoder's, reversed,
            without the coarsest).
        final_init_std: standard deviation of the last layer's weights.
        norm: ``None``, ``"batch"`` or ``"instance"`` normalisation after each convolution.

    Shapes: ``(B, in_channels, *spatial)`` -> ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        ndim: int,
        in_channels: int = 2,
        out_channels: int | None = None,
        features: Sequence[int] = (16, 32, 32, 32),
        decoder_features: Sequence[int] | None = None,
        final_init_std: float = 1e-5,
        norm: str | None = None,
    ):
        super().__init__()
        ndim = check_ndim("UNet", ndim)
        conv = conv_class(ndim)
        in_channels = check_channels("UNet", "in_channels", in_channels)
        feats = check_features("UNet", features)
        dec = check_features("UNet", decoder_features, name="decoder_features") if decoder_features is not None else feats[-2::-1]
        if len(dec) != len(feats) - 1:
            raise ValueError(f"UNet: decoder_features must have len(features) - 1 = {len(feats) - 1} entries, got {len(dec)}")
        out_channels = ndim if out_channels is None else check_channels("UNet", "out_channels", out_channels)
        final_init_std = check_number("UNet", "final_init_std", final_init_std, low=0)
        self.ndim = ndim
        self.config = dict(ndim=ndim, in_channels=in_channels, out_channels=out_channels, features=list(feats),
                           decoder_features=list(dec), final_init_std=final_init_std, norm=norm)
        self.inc = ConvBlock(ndim, in_channels, feats[0], norm=norm)
        self.down = nn.ModuleList(ConvBlock(ndim, feats[i - 1], feats[i], stride=2, norm=norm) for i in range(1, len(feats)))
        ups, c = [], feats[-1]
        for level, d in zip(range(len(feats) - 2, -1, -1), dec):
            ups.append(ConvBlock(ndim, c + feats[level], d, norm=norm))
            c = d
        self.up = nn.ModuleList(ups)
        self.refine = ConvBlock(ndim, c, c, norm=norm)
        head = conv(c, out_channels, kernel_size=3, padding=1)
        nn.init.normal_(head.weight, std=final_init_std)
        assert head.bias is not None  # a convolution with bias (PyTorch's default)
        nn.init.zeros_(head.bias)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float("UNet", "x", check_image("UNet", "x", x, ndim=self.ndim), module_dtype(self))
        return self.body(x)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without the input checks, for an input already checked (e.g. by a registration network)."""
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        for block, skip in zip(self.up, reversed(skips)):
            y = F.interpolate(y, size=skip.shape[2:], mode=mode, align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        return self.head(self.refine(y))


@register_model
class RegistrationNet(nn.Module):
    r"""VoxelMorph-style deformable registration network (Balakrishnan et al., 2019).

    A :class:`UNet` on the concatenated pair predicts a displacement field :math:`u`; a spatial
    transformer warps the moving image, :math:`M \circ \varphi`, :math:`\varphi = \mathrm{Id} + u`.
    With ``diffeomorphic=True`` the U-Net predicts a stationary velocity field :math:`v` instead and
    :math:`\varphi = \exp(v)` is obtained by scaling and squaring (``integration_steps`` squarings,
    :func:`regedu.integrate_velocity`; Dalca et al., 2018), which gives a smooth invertible deformation.

    ``scale < 1`` makes the network work on images resized by ``scale`` (a coarse stage of a
    multi-resolution chain, and much faster); the field is upsampled to the input size with
    :func:`regedu.resize_dvf` (which rescales the voxel units).

    Args:
        ndim: 2 or 3.
        channels: channels of each of fixed and moving (1 for grey-value images).
        features: U-Net channels per level (see :class:`UNet`).
        diffeomorphic: predict a velocity field and integrate it.
        integration_steps: scaling-and-squaring steps.
        scale: resolution factor at which the network works (0 < scale <= 1).
        final_init_std: initial weight scale of the last layer (near zero: start at the identity).
        norm: normalisation after each convolution, ``"instance"`` (default: trains several times
            faster than none in the first few hundred steps), ``"batch"`` or ``None`` (VoxelMorph's choice).

    ``forward(fixed, moving)`` returns a registration output dict (see the module docstring).
    """

    def __init__(
        self,
        ndim: int = 2,
        channels: int = 1,
        features: Sequence[int] = (16, 32, 32, 32),
        diffeomorphic: bool = False,
        integration_steps: int = 7,
        scale: float = 1.0,
        final_init_std: float = 1e-3,
        norm: str | None = "instance",
    ):
        super().__init__()
        ndim = check_ndim("RegistrationNet", ndim)
        channels = check_channels("RegistrationNet", "channels", channels)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
            raise ValueError(f"RegistrationNet: scale must be in (0, 1], got {scale!r}")
        integration_steps = check_number("RegistrationNet", "integration_steps", integration_steps, low=0, integer=True)
        self.ndim, self.channels = ndim, channels
        self.diffeomorphic, self.integration_steps, self.scale = bool(diffeomorphic), int(integration_steps), float(scale)
        self.unet = UNet(ndim, 2 * channels, ndim, features, final_init_std=final_init_std, norm=norm)
        self.config = dict(ndim=ndim, channels=channels, features=list(features), diffeomorphic=bool(diffeomorphic),
                           integration_steps=int(integration_steps), scale=float(scale), final_init_std=final_init_std, norm=norm)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict[str, Any]:
        x = pair_input("RegistrationNet", fixed, moving, self.ndim, self.channels, module=self)
        moving = x[:, self.channels:]  # in the network's dtype
        shape = tuple(fixed.shape[2:])
        if self.scale != 1.0:
            x = resize(x, scale=self.scale)
        field = self.unet.body(x)  # x is checked (pair_input)
        out: dict[str, Any] = {}
        if self.diffeomorphic:
            out["velocity"] = field
            dvf = integrate_velocity(field, self.integration_steps)
        else:
            dvf = field
        out["regularise"] = [field]
        if tuple(dvf.shape[2:]) != shape:
            dvf = _resize_dvf(dvf, shape)  # the network's own output: no input checks
        out["dvf"] = dvf
        out["moved"] = warp(moving, dvf)
        return out


@register_model
class AffineNet(nn.Module):
    r"""Affine registration network: regresses one global affine transform of a (fixed, moving) pair.

    A convolutional encoder on the concatenated pair predicts the 6 (2D) or 12 (3D) entries of
    PyTorch's normalised :math:`\theta = I + \Delta\theta` (last layer initialised to zero, so the
    initial prediction is the identity); :func:`regedu.transforms.theta_to_affine` converts it to the
    library's homogeneous voxel matrix :math:`A` (fixed voxel -> moving voxel), and the moving image
    is warped with :func:`regedu.affine_warp`, :math:`M(Ax)`. Normalised coordinates make the
    output scale the same for every image size. As the first stage of DLIR (de Vos et al., 2019).

    ``forward(fixed, moving)`` returns a registration output with ``"matrix"`` ``(B, ndim+1, ndim+1)``,
    ``"dvf"`` (its dense displacement, :func:`regedu.affine_to_dvf`), ``"moved"`` and an empty
    ``"regularise"`` list.
    """

    def __init__(self, ndim: int = 2, channels: int = 1, features: Sequence[int] = (16, 32, 64, 64), hidden: int = 64,
                 pool: int = 4, norm: str | None = None):
        super().__init__()
        ndim = check_ndim("AffineNet", ndim)
        channels = check_channels("AffineNet", "channels", channels)
        self.ndim, self.channels = ndim, channels
        eye = torch.eye(ndim, ndim + 1)
        self.regressor = ConvRegressor(ndim, 2 * channels, ndim * (ndim + 1), features, hidden, pool, norm, init_bias=eye)
        self.config = dict(ndim=ndim, channels=channels, features=list(features), hidden=hidden, pool=pool, norm=norm)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict[str, Any]:
        x = pair_input("AffineNet", fixed, moving, self.ndim, self.channels, module=self)
        moving = x[:, self.channels:]  # in the network's dtype
        shape = tuple(fixed.shape[2:])
        theta = self.regressor(x).reshape(-1, self.ndim, self.ndim + 1)
        A = transforms.theta_to_affine(theta, shape)
        return {"matrix": A, "dvf": affine_to_dvf(A, shape), "moved": affine_warp(moving, A), "regularise": []}


@register_model
class IdentityNet(nn.Module):
    """The identity 'registration' (zero displacement): the baseline every model must beat."""

    def __init__(self):
        super().__init__()
        self.config: dict[str, Any] = {}

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict[str, Any]:
        fixed, moving = check_pair("IdentityNet", "fixed", fixed, "moving", moving)
        moving = as_float("IdentityNet", "moving", moving)
        ndim = fixed.dim() - 2
        dvf = torch.zeros(fixed.shape[0], ndim, *fixed.shape[2:], dtype=moving.dtype, device=moving.device)
        return {"dvf": dvf, "moved": moving, "regularise": []}


@register_model
class RegistrationChain(nn.Module):
    r"""A multi-stage registration network: each stage registers ``fixed`` to the output of the previous.

    Stage ``k`` predicts :math:`u_k` from ``(fixed, moving warped by the composition so far)``; the total
    displacement is the composition :math:`\varphi = \varphi_1 \circ \varphi_2 \circ \dots`, i.e.
    ``u = compose(compose(u_1, u_2), u_3) ...`` with :func:`regedu.compose`, and the moving image is
    resampled **once** with the total field (no accumulated interpolation blur), as in DLIR
    (de Vos et al., 2019): typically an :class:`AffineNet` first, then :class:`RegistrationNet` stages
    from coarse (``scale=0.25``) to fine (``scale=1``). Train end to end, or stage by stage by freezing
    earlier stages (``chain.stages[0].requires_grad_(False)``).

    ``stages``: a list of registration modules (or of ``{"class": name, "config": {...}}`` specs, as
    stored in checkpoints). The output carries the first affine stage's ``"matrix"`` (if any) and
    ``"stages"``, the list of per-stage outputs.
    """

    def __init__(self, stages: Sequence[nn.Module | dict]):
        super().__init__()
        if len(stages) == 0:
            raise ValueError("RegistrationChain: stages must contain at least one registration module, got none")
        mods = [build_model(s["class"], s["config"]) if isinstance(s, dict) else s for s in stages]
        for k, m in enumerate(mods):
            if not isinstance(m, nn.Module):
                raise TypeError(f"RegistrationChain: stages[{k}] must be an nn.Module or a spec dict, got {type(m).__name__}")
        self.stages = nn.ModuleList(mods)

    @property
    def config(self) -> dict[str, Any]:
        return {"stages": [{"class": type(s).__name__, "config": s.config} for s in self.stages]}

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict[str, Any]:
        fixed, moving = check_pair("RegistrationChain", "fixed", fixed, "moving", moving)
        moving = as_float("RegistrationChain", "moving", moving, module_dtype(self))
        total, moved, outs, reg = None, moving, [], []
        for stage in self.stages:
            out = stage(fixed, moved)
            total = out["dvf"] if total is None else compose(total, out["dvf"])
            moved = warp(moving, total)
            outs.append(out)
            reg.extend(out.get("regularise", []))
        result: dict[str, Any] = {"dvf": total, "moved": moved, "regularise": reg, "stages": outs}
        if "matrix" in outs[0]:
            result["matrix"] = outs[0]["matrix"]
        return result


def multi_stage(
    ndim: int = 2,
    channels: int = 1,
    affine: bool = True,
    scales: Sequence[float] = (0.5, 1.0),
    features: Sequence[int] = (16, 32, 32, 32),
    diffeomorphic: bool = False,
) -> RegistrationChain:
    """A DLIR-style chain: an optional :class:`AffineNet`, then one :class:`RegistrationNet` per scale (coarse to fine)."""
    if len(scales) == 0 and not affine:
        raise ValueError("multi_stage: give at least one stage (affine=True or a non-empty scales), got neither")
    stages: list[nn.Module] = [AffineNet(ndim, channels)] if affine else []
    stages += [RegistrationNet(ndim, channels, features, diffeomorphic=diffeomorphic, scale=s) for s in scales]
    return RegistrationChain(stages)
