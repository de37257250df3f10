r"""Real scans of real people that ship inside installed packages (nothing is downloaded).

Every quantitative claim that rests only on synthetic deformations of one template can be checked
here against real anatomy of other people and real second contrasts:

==========================  ===================================================  ==============================
loader                      what it is                                           origin, licence
==========================  ===================================================  ==============================
:func:`load_t1_slice`       a real skull-stripped T1-weighted **coronal slice**  dipy's test data
                            of one adult, 256 x 256 (pixel size not recorded;    ``dipy/data/files/
                            the brain's width, ~140 px, fits 1 mm)               t1_coronal_slice.npy``, BSD-3
:func:`load_b0_slab`        a real **b = 0 diffusion** volume (T2-weighted:      dipy's ``S0_10slices.nii.gz``,
                            CSF bright, white matter dark), 10 axial slices      BSD-3
                            of 128 x 128 at 2 x 2 mm in-plane
:func:`load_b0_volume`      a real whole-brain **b = 0** volume at 4 x 4 x 5 mm  dipy's ``aniso_vox.nii.gz``,
                            (58 x 58 x 24; anisotropic voxels, T2-weighted)      BSD-3
:func:`load_epi`            a real **functional EPI** volume (T2*-weighted),     nibabel's test data
                            128 x 96 x 24 at 2 x 2 x 2.2 mm (first of 2 frames)  ``example4d.nii.gz``, MIT
:func:`regedu.data.         a real 2D sagittal **head MRI** with skull           matplotlib's sample data
load_head_mri`                                                                   ``s1045.ima.gz``, PSF licence
==========================  ===================================================  ==============================

dipy is distributed under the BSD 3-clause licence (Garyfallidis et al., "Dipy, a library for the
analysis of diffusion MRI data", Frontiers in Neuroinformatics, 2014); nibabel under the MIT licence.
The packages do not document which scanner or subject each file comes from beyond the notes above;
the files are real acquisitions (noise, bias field, partial volume), which is what matters here.

None of these subjects has an expert segmentation. :func:`tissue_segmentation` makes one
*independently of any registration*: a 1D Gaussian mixture fitted by expectation-maximisation to the
intensities inside the brain mask (:func:`brain_mask`), which is how classical tissue classifiers
(e.g. FSL FAST, without its spatial prior) start. Use it to evaluate atlas-based segmentation transfer:
warp the atlas labels onto the subject and compare with the subject's own segmentation.

Loaders return :class:`~regedu.data.Volume` objects (``image`` in ``[0, 1]``, divided by the 99.9th
percentile inside the head and clipped, ``labels`` = the brain mask as 1 unless stated, ``affine`` and
``spacing`` from the file), reoriented to RAS+ like :func:`regedu.data.load_nifti`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from .volume import Volume


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the real scan {'/'.join(parts)} ships with the package '{package}', which is not "
                                  f"installed; install it with: pip install {package}")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed package '{package}' (a stripped installation?); "
                                f"reinstall it with: pip install --force-reinstall {package}")
    return path


def dipy_file(name: str) -> Path:
    """Path of a file in dipy's bundled data folder ``dipy/data/files`` (e.g. ``"S0_10slices.nii.gz"``)."""
    return _package_file("dipy", "data", "files", name)


def _normalise(a: np.ndarray, percentile: float = 99.9) -> np.ndarray:
    a = a.astype(np.float32)
    inside = a[a > 0]
    top = float(np.percentile(inside, percentile)) if inside.size else 1.0
    return np.clip(a / max(top, 1e-12), 0.0, 1.0)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of the histogram."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def brain_mask(image: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Head/brain mask of one image ``(1, 1, *S)``: Otsu's threshold (or ``threshold``), then the largest
    connected component with its holes filled. Returns ``(1, 1, *S)`` int64 (1 inside, 0 outside).

    On a skull-stripped scan or a diffusion b = 0 image (skull dark) this is the brain.
    """
    from scipy import ndimage as ndi

    a = image.detach().cpu().double().numpy()[0, 0]
    t = _otsu(a[a > 0]) if threshold is None else float(threshold)
    m = a > t
    lab, n = ndi.label(m)
    if n == 0:
        raise ValueError(f"brain_mask: nothing above the threshold {t:g}; is the image empty?")
    sizes = ndi.sum(m, lab, index=range(1, n + 1))
    m = ndi.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))
    if m.ndim == 3:  # holes open to a slab's top or bottom slice: fill slice by slice too
        m = np.stack([ndi.binary_fill_holes(s) for s in m], 0) | m
    return torch.from_numpy(m.astype(np.int64))[None, None].to(image.device)


def _gmm_1d(x: np.ndarray, k: int, iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """EM for a 1D mixture of ``k`` Gaussians, started at the k quantile midpoints (deterministic).
    Returns (means, stds, weights, responsibilities (N, k))."""
    mu = np.quantile(x, (np.arange(k) + 0.5) / k)
    sd = np.full(k, x.std() / k + 1e-6)
    w = np.full(k, 1.0 / k)
    for _ in range(iterations):
        logp = -0.5 * ((x[:, None] - mu) / sd) ** 2 - np.log(sd) + np.log(w)
        logp -= logp.max(1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(1, keepdims=True)
        nk = r.sum(0) + 1e-12
        w = nk / nk.sum()
        mu = (r * x[:, None]).sum(0) / nk
        sd = np.sqrt((r * (x[:, None] - mu) ** 2).sum(0) / nk) + 1e-6
    return mu, sd, w, r


def tissue_segmentation(
    image: torch.Tensor,
    mask: torch.Tensor,
    contrast: str = "t1",
    classes: int = 3,
    iterations: int = 60,
) -> torch.Tensor:
    r"""Tissue classes from intensities alone: a Gaussian mixture :math:`p(I) = \sum_k w_k \mathcal N(I; \mu_k, \sigma_k^2)`
    fitted by EM to the voxels inside ``mask``; each voxel gets its most probable class.

    Args:
        image: ``(1, 1, *S)`` intensities. mask: ``(1, 1, *S)``, nonzero inside the brain.
        contrast: ``"t1"`` (CSF darkest, then grey, then white matter) or ``"t2"`` (the reverse: CSF brightest).
        classes: number of mixture components (3: CSF, GM, WM).

    Returns:
        ``(1, 1, *S)`` int64 labels, 0 outside the mask and ``1..classes`` inside, numbered as the
        course's brain labels (1 CSF, 2 grey matter, 3 white matter) for ``classes=3``.
    """
    if contrast not in ("t1", "t2"):
        raise ValueError(f"tissue_segmentation: contrast must be 't1' or 't2', got {contrast!r}")
    if image.shape != mask.shape or image.dim() not in (4, 5) or image.shape[:2] != (1, 1):
        raise ValueError(f"tissue_segmentation: image and mask must both be (1, 1, *S), got {tuple(image.shape)} "
                         f"and {tuple(mask.shape)}")
    a = image.detach().cpu().double().numpy().ravel()
    m = mask.detach().cpu().numpy().ravel() != 0
    if m.sum() < 10 * classes:
        raise ValueError(f"tissue_segmentation: the mask holds {int(m.sum())} voxels; need at least {10 * classes}")
    mu, _, _, r = _gmm_1d(a[m], classes, iterations)
    rank = np.argsort(np.argsort(mu))  # class k's position by mean intensity (0 = darkest)
    if contrast == "t2":
        rank = classes - 1 - rank
    out = np.zeros(a.shape, np.int64)
    out[m] = 1 + rank[np.argmax(r, 1)]
    return torch.from_numpy(out.reshape(image.shape)).to(image.device)


def _volume_from_nifti(path: Path, name: str, volume_index: int | None = None, device=None,
                       threshold: float | None = None) -> Volume:
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    a = np.asanyarray(img.dataobj).astype(np.float32)
    if volume_index is not None:
        a = a[..., volume_index]
    a = np.ascontiguousarray(a.reshape(a.shape[:3]))
    A = np.asarray(img.affine, np.float64)
    image = torch.from_numpy(_normalise(a))[None, None]
    spacing = tuple(float(s) for s in np.linalg.norm(A[:3, :3], axis=0))
    v = Volume(image, brain_mask(image, threshold), torch.from_numpy(A), spacing, name=name)
    return v.to(device) if device is not None else v


def load_t1_slice(device=None) -> Volume:
    """dipy's real skull-stripped T1 coronal slice with its own tissue segmentation.

    Returns a :class:`Volume`: ``image`` ``(1, 1, 256, 256)`` float32 in ``[0, 1]`` (rows superior ->
    inferior, as ``plt.imshow`` shows it), ``labels`` = :func:`tissue_segmentation` of the image inside
    its :func:`brain_mask` (1 CSF, 2 GM, 3 WM; made from this subject's intensities only, never from
    an atlas), ``spacing`` ``(1.0, 1.0)`` mm (not recorded in the file; assumed), ``affine`` the identity
    with that spacing. Origin: ``dipy/data/files/t1_coronal_slice.npy`` (dipy, BSD-3).
    """
    a = np.load(dipy_file("t1_coronal_slice.npy")).astype(np.float32)
    image = torch.from_numpy(_normalise(a))[None, None]
    mask = brain_mask(image, threshold=0.02)
    labels = tissue_segmentation(image, mask, "t1")
    v = Volume(image, labels, torch.eye(4, dtype=torch.float64), (1.0, 1.0), name="dipy T1 coronal slice (real)")
    return v.to(device) if device is not None else v


def load_b0_slab(device=None) -> Volume:
    """dipy's real b = 0 diffusion slab ``S0_10slices.nii.gz``: ``(1, 1, 128, 128, 10)`` (RAS+), T2-weighted.

    ``spacing`` is 2 x 2 mm in-plane; the file's third affine column is oblique and 53 mm long (a slab
    of 10 slices cut from a larger volume), so treat the slices as 2D images. ``labels``: brain mask at
    0.05 of the normalised intensity (Otsu's threshold separates only the very bright CSF in this slab).
    """
    return _volume_from_nifti(dipy_file("S0_10slices.nii.gz"), "dipy S0_10slices b=0 (real)", 0, device, 0.05)


def load_b0_volume(device=None) -> Volume:
    """dipy's real whole-brain b = 0 volume ``aniso_vox.nii.gz``: ``(1, 1, 58, 58, 24)`` at 4 x 4 x 5 mm
    (RAS+ after reorientation), T2-weighted (CSF bright). ``labels``: brain mask. Anisotropic voxels:
    registration must use the affine/spacing, not the voxel grid."""
    return _volume_from_nifti(dipy_file("aniso_vox.nii.gz"), "dipy aniso_vox b=0 (real)", None, device)


def load_epi(device=None) -> Volume:
    """nibabel's real functional EPI ``example4d.nii.gz`` (first frame): ``(1, 1, 128, 96, 24)`` at
    2 x 2 x 2.2 mm (RAS+), T2*-weighted. ``labels``: brain mask. Origin: nibabel's test data (MIT)."""
    return _volume_from_nifti(_package_file("nibabel", "tests", "data", "example4d.nii.gz"),
                              "nibabel example4d EPI (real)", 0, device)


REAL_SCANS = {
    "t1_slice": ("dipy", "data/files/t1_coronal_slice.npy", "BSD-3-Clause"),
    "b0_slab": ("dipy", "data/files/S0_10slices.nii.gz", "BSD-3-Clause"),
    "b0_volume": ("dipy", "data/files/aniso_vox.nii.gz", "BSD-3-Clause"),
    "epi": ("nibabel", "tests/data/example4d.nii.gz", "MIT"),
    "head_mri": ("matplotlib", "mpl-data/sample_data/s1045.ima.gz", "PSF-based matplotlib licence"),
}
"""name -> (package, file inside the package, licence) of every real scan the course reads."""


__all__ = [
    "REAL_SCANS", "brain_mask", "dipy_file", "load_b0_slab", "load_b0_volume", "load_epi", "load_t1_slice",
    "tissue_segmentation",
]
