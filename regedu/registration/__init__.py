"""Iterative registration: transformation models, the :func:`register` engine, and demons.

``register(fixed, moving, transform=..., similarity=..., regulariser=..., ...)`` optimises a
transformation model (:mod:`.models`) on a resolution pyramid and returns a :class:`RegistrationResult`;
:func:`demons` is the classical dense baseline (Thirion, 1998) with the same result type.
"""

from .demons import demons
from .engine import DEFAULTS, DEFAULT_WEIGHTS, register
from .models import (
    MODELS,
    AffineModel,
    BSplineModel,
    DenseModel,
    RigidModel,
    SVFModel,
    TransformationModel,
    TranslationModel,
    rescale_matrix,
)
from .result import RegistrationResult

__all__ = [
    "register", "RegistrationResult", "demons", "DEFAULTS", "DEFAULT_WEIGHTS", "MODELS", "TransformationModel",
    "TranslationModel", "RigidModel", "AffineModel", "BSplineModel", "DenseModel", "SVFModel", "rescale_matrix",
]
