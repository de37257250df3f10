"""regedu: deep learning for medical image registration, a course library.

Conventions (DESIGN.md): images ``(B, C, *spatial)``; displacement fields ``(B, ndim, *spatial)`` in
voxels, channel ``k`` along tensor axis ``k``; warping pulls back, ``moved(x) = moving(x + u(x))``;
affine matrices are homogeneous and map fixed voxels to moving voxels; ``align_corners=True``.
"""

from . import data, evaluation, fields, filters, regularisers, resampling, similarity, spatial_transformer, transforms, utils, warping
from . import learning  # learning-based registration (networks, training loop, STN, learned similarity, RL)
from .fields import (
    bspline_to_dvf,
    compose,
    dof,
    endpoint_error,
    folding_fraction,
    integrate_velocity,
    invert_dvf,
    jacobian_determinant,
    random_bspline_dvf,
    random_dvf,
)
from .evaluation import EvaluationCard, evaluate, hausdorff95, measure, sdlogj
from .registration import RegistrationResult, demons, register
from .regularisers import bending_energy, diffusion
from .similarity import (
    dice,
    dice_loss,
    lncc,
    mse,
    mutual_information,
    ncc,
    soft_dice,
    ssd,
    target_registration_error,
)
from .resampling import coarse_shape, image_pyramid, resize, resize_dvf
from .transforms import affine_matrix, affine_params, rigid_matrix, rigid_params
from .utils import cpu_threads, get_device, seed_everything
from .warping import affine_to_dvf, affine_warp, identity_grid, warp, warp_labels

__version__ = "0.1.0"

__all__ = [
    # modules
    "data", "evaluation", "fields", "filters", "learning", "regularisers", "resampling", "similarity", "spatial_transformer",
    "transforms", "utils", "warping",
    # fields
    "bspline_to_dvf", "compose", "dof", "endpoint_error", "folding_fraction", "integrate_velocity", "invert_dvf",
    "jacobian_determinant", "random_bspline_dvf", "random_dvf",
    # evaluation card (Dice, HD95 mm, TRE mm, SDlogJ, folding, inverse consistency, time, memory)
    "EvaluationCard", "evaluate", "hausdorff95", "measure", "sdlogj",
    # registration engines
    "RegistrationResult", "demons", "register",
    # regularisers
    "bending_energy", "diffusion",
    # similarity and evaluation
    "dice", "dice_loss", "lncc", "mse", "mutual_information", "ncc", "soft_dice", "ssd", "target_registration_error",
    # warping and resampling
    "affine_to_dvf", "affine_warp", "coarse_shape", "identity_grid", "image_pyramid", "resize", "resize_dvf", "warp",
    "warp_labels",
    # transforms
    "affine_matrix", "affine_params", "rigid_matrix", "rigid_params",
    # utilities
    "cpu_threads", "get_device", "seed_everything",
    "__version__",
]
