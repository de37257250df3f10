"""Iterative registration: transformation models, the :func:`register` engine, demons, point-based
registration and initialisation.

``register(fixed, moving, transform=..., similarity=..., regulariser=..., ...)`` optimises a
transformation model (:mod:`.models`) on a resolution pyramid and returns a :class:`RegistrationResult`;
:func:`demons` is the classical dense baseline (Thirion, 1998) with the same result type.

How :func:`register` is built, in the order it runs: :mod:`.planning` checks the inputs and makes a
:class:`RegistrationPlan` (pyramid, per-level settings, model); :func:`optimise` runs the levels, each
with :func:`run_level` minimising a :class:`LevelObjective` and keeping the best point it evaluated;
a :class:`HistoryRecorder` (:mod:`.history`, shared with :func:`demons`) keeps the loss curve,
snapshots and the progress bar.

:mod:`.points` registers landmark sets in closed form (Kabsch/Umeyama, least-squares affine) and
predicts FRE/TRE (Fitzpatrick); :mod:`.initialisation` gives a starting transform (centre of mass,
principal axes, coarse exhaustive search).
"""

from .demons import demons
from .engine import DEFAULT_MATRIX_SIMILARITY, DEFAULT_SIMILARITY, DEFAULT_WEIGHTS, DEFAULTS, LevelObjective, RegistrationPlan, optimise, register, run_level
from .history import HistoryRecorder
from .initialisation import centre_of_mass, exhaustive_search, moments_initialisation, principal_axes
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
    smooth,
)
from .planning import ImagePair, check_pair
from .points import expected_fre, expected_tre, fiducial_registration_error, fit_points, target_errors
from .result import RegistrationResult

__all__ = [
    "register", "RegistrationResult", "demons", "DEFAULTS", "DEFAULT_WEIGHTS", "MODELS", "TransformationModel",
    "TranslationModel", "RigidModel", "AffineModel", "BSplineModel", "DenseModel", "SVFModel", "rescale_matrix",
    "smooth", "DEFAULT_SIMILARITY", "DEFAULT_MATRIX_SIMILARITY", "RegistrationPlan", "ImagePair", "check_pair", "LevelObjective", "run_level",
    "optimise", "HistoryRecorder",
    # point-based registration and initialisation
    "fit_points", "fiducial_registration_error", "target_errors", "expected_fre", "expected_tre",
    "centre_of_mass", "principal_axes", "moments_initialisation", "exhaustive_search",
]
