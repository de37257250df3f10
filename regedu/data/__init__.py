"""Course data, all offline: a real 3D brain MRI with tissue labels, a real 2D head MRI, digits, toy
shapes, synthetic subjects and registration pairs with known ground truth, and NIfTI I/O.

* :func:`load_brain`, :func:`brain_slice`: the MNI ICBM152 2009a template (from nilearn's wheel)
  with CSF/GM/WM labels at 1, 2, 4 mm; cite Fonov et al. 2009 and 2011 (see :data:`CITATION`).
* :func:`load_head_mri`: matplotlib's 2D head MRI with skull.
* :func:`make_shape`: a circle, a square or a "C" with exact labels.
* :func:`load_digits`, :class:`DistortedDigits`: scikit-learn's handwritten digits, upsampled, with
  random rotation/scale/translation/clutter (for spatial transformer networks).
* :func:`synthetic_subject`, :class:`PairDataset`: random diffeomorphic subjects and registration
  pairs with ground-truth DVFs (train and eval use different deformation models and seeds);
  :func:`t2_like`: a second, T2-like contrast aligned with the T1.
* :mod:`regedu.data.real`: real scans of real people shipped in dipy's and nibabel's wheels
  (:func:`load_t1_slice`, :func:`load_b0_slab`, :func:`load_b0_volume`, :func:`load_epi`) with origin and
  licence, a :func:`brain_mask` and an independent :func:`tissue_segmentation` (Gaussian mixture).
* :func:`read_folder`: your own scans, Learn2Reg layout (``imagesTr/``, ``labelsTr/``, ``keypointsTr/``,
  dataset JSON) or one folder per subject; :mod:`regedu.data.preprocess`: reorient, resample, crop/pad,
  normalise, affine pre-alignment, chained in a :class:`Pipeline`.
* :func:`load_nifti`, :func:`save_nifti`, :func:`save_dvf`, :func:`load_dvf`, :func:`voxel_to_world`,
  :func:`world_to_voxel`: NIfTI I/O (nibabel) with clear errors.

Importing this package is light: nibabel, scipy and scikit-learn are imported only when needed.
"""

from .brain import CITATION, LABEL_NAMES, brain_slice, load_brain, template_dir
from .digits import DistortedDigits, load_digits
from .folders import Scan, ScanFolder, read_folder, read_landmarks
from .nifti import load_dvf, load_nifti, save_dvf, save_nifti, voxel_to_world, world_to_voxel
from .preprocess import Pipeline, align_to, crop_or_pad, normalise, reorient, resample, resample_to
from .real import REAL_SCANS, brain_mask, load_b0_slab, load_b0_volume, load_epi, load_t1_slice, tissue_segmentation
from .scans import load_head_mri
from .shapes import make_shape
from .synthetic import (
    EVAL_SEED_OFFSET,
    PairDataset,
    bias_field,
    random_affine,
    random_diffeomorphism,
    random_intensity,
    random_velocity,
    synthetic_subject,
    t2_like,
)
from .volume import Volume, fit_volume

__all__ = [
    "CITATION", "EVAL_SEED_OFFSET", "LABEL_NAMES", "PairDataset", "Volume", "bias_field", "brain_slice",
    "fit_volume", "load_brain", "load_head_mri", "make_shape", "random_affine", "random_diffeomorphism",
    "random_intensity", "random_velocity", "synthetic_subject", "t2_like", "template_dir",
    "DistortedDigits", "load_digits", "load_nifti", "save_nifti", "load_dvf", "save_dvf", "voxel_to_world", "world_to_voxel",
    "REAL_SCANS", "brain_mask", "load_b0_slab", "load_b0_volume", "load_epi", "load_t1_slice", "tissue_segmentation",
    "Scan", "ScanFolder", "read_folder", "read_landmarks",
    "Pipeline", "align_to", "crop_or_pad", "normalise", "reorient", "resample", "resample_to",
]
