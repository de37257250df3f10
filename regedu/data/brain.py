r"""A real 3D brain MRI with tissue labels, offline: the MNI ICBM152 2009a template.

Origin
------
nilearn's wheel ships three files of the *MNI ICBM152 non-linear symmetric 2009a* atlas in
``nilearn/datasets/data/`` (read here directly with nibabel; nilearn itself is not imported and
nothing is downloaded):

* ``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``: the T1-weighted average, brain-extracted
  (zero outside the brain), 197 x 233 x 189 voxels of 1 mm, uint8,
* ``mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz`` and ``..._wm_...``: grey- and white-matter
  probability maps on the same grid (uint8, 255 = probability 1).

The template is an unbiased non-linear average of 152 young adults' MRI scans (ICBM152) built by
the McConnell Brain Imaging Centre, Montreal Neurological Institute. Cite:

* V. S. Fonov, A. C. Evans, R. C. McKinstry, C. R. Almli, D. L. Collins (2009). *Unbiased nonlinear
  average age-appropriate brain templates from birth to adulthood.* NeuroImage 47, Supplement 1, S102.
* V. Fonov, A. C. Evans, K. Botteron, C. R. Almli, R. C. McKinstry, D. L. Collins and the Brain
  Development Cooperative Group (2011). *Unbiased average age-appropriate atlases for pediatric
  studies.* NeuroImage 54(1), 313-327.

What we derive
--------------
* **Brain mask** ``B``: the non-zero voxels of the (brain-extracted) T1, which include the ventricles
  and sulcal CSF, united with ``p_GM + p_WM >= 0.5``, closed and hole-filled (``scipy.ndimage``).
  (The wheel carries no mask file.)
* **CSF probability** ``p_CSF = B * max(0, 1 - p_GM - p_WM)`` ("brain minus GM minus WM").
* **Labels**: 0 outside the brain, inside it the arg-max of ``(p_CSF, p_GM, p_WM)`` + 1, i.e.
  1 CSF, 2 grey matter, 3 white matter.
* **Crop**: a box of 160 x 192 x 160 mm centred on the brain's bounding box (the template has no
  skull: the "head" is the brain plus a margin of a few mm; voxels outside the file's grid are
  zero-padded). At 2 mm this is 80 x 96 x 80 and at 4 mm 40 x 48 x 40, sizes that halve cleanly
  in a U-Net.
* **Resolutions** 2 and 4 mm by averaging 2^3 or 4^3 blocks of the 1 mm crop (intensities and
  probabilities; partial volumes are kept), the brain mask where the block average is >= 0.5,
  labels again by arg-max. The new voxel ``i`` lies at the centre of its block, so the affine is
  ``A_r = A_1 @ [[r, 0, 0, (r-1)/2], ...]`` and world coordinates stay exact.

Axis order: the files are already in canonical RAS orientation (checked with
``nibabel.as_closest_canonical``): tensor axis 0 runs left -> right (x), axis 1 posterior ->
anterior (y), axis 2 inferior -> superior (z). :func:`brain_slice` reorders axes for display.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._checks import check_choice
from .volume import Volume, fit_volume

RESOLUTIONS = (1, 2, 4)
CROP_SHAPE_MM = (160, 192, 160)
LABEL_NAMES = {0: "background", 1: "CSF", 2: "grey matter", 3: "white matter"}
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
CITATION = (
    "MNI ICBM152 non-linear symmetric 2009a template (McConnell Brain Imaging Centre), as shipped in "
    "nilearn. Fonov et al. (2009) NeuroImage 47:S102, 'Unbiased nonlinear average age-appropriate brain "
    "templates from birth to adulthood'; Fonov et al. (2011) NeuroImage 54(1):313-327, 'Unbiased average "
    "age-appropriate atlases for pediatric studies'."
)

_CACHE: dict[int, Volume] = {}
_SLICE_CACHE: dict[tuple, Volume] = {}


def template_dir() -> Path:
    """Folder of nilearn's bundled data files, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "regedu.data: the brain template ships inside the 'nilearn' package, which is not installed; "
            "install it with `pip install nilearn` (no download happens at run time)"
        )
    folder = Path(spec.origin).parent / "datasets" / "data"
    missing = [f for f in TEMPLATE_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"regedu.data: nilearn's data folder {folder} lacks {', '.join(missing)}")
    return folder


def _read_canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def _crop(a: np.ndarray, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Crop ``a`` to ``shape`` from ``start`` (may lie outside: zero padding)."""
    out = np.zeros(tuple(shape), dtype=a.dtype)
    src, dst = [], []
    for s0, n, N in zip(start, shape, a.shape):
        lo, hi = max(s0, 0), min(s0 + n, N)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s0, hi - s0))
    out[tuple(dst)] = a[tuple(src)]
    return out


def _block_mean(a: np.ndarray, r: int) -> np.ndarray:
    if r == 1:
        return a
    X, Y, Z = (s // r for s in a.shape)
    return a[: X * r, : Y * r, : Z * r].reshape(X, r, Y, r, Z, r).mean(axis=(1, 3, 5))


def _labels_from(brain: np.ndarray, tissues: np.ndarray) -> np.ndarray:
    labels = np.argmax(tissues, axis=0).astype(np.int64) + 1
    labels[~brain] = 0
    return labels


def _shift_op(mask: np.ndarray, op, pad_value: bool) -> np.ndarray:
    """``op`` (max: dilation, min: erosion) over a 3x3x3 cube, separably along each axis."""
    out = mask
    for axis in range(out.ndim):
        p = np.pad(out, [(1, 1) if a == axis else (0, 0) for a in range(out.ndim)], constant_values=pad_value)
        n = out.shape[axis]
        out = op(op(p.take(range(0, n), axis), p.take(range(1, n + 1), axis)), p.take(range(2, n + 2), axis))
    return out


def _close(mask: np.ndarray) -> np.ndarray:
    """Morphological closing with a 3x3x3 cube: dilation, then erosion (the outside counts as foreground
    for the erosion, so a mask touching the array border is not eaten away there)."""
    return _shift_op(_shift_op(mask, np.logical_or, False), np.logical_and, True)


def _fill_holes(mask: np.ndarray, ndi) -> np.ndarray:
    """Fill the cavities of a mask: background components that do not touch the array border."""
    lab, n = ndi.label(~mask)
    faces = np.concatenate([np.take(lab, i, axis=a).ravel() for a in range(3) for i in (0, -1)])
    touches = np.zeros(n + 1, dtype=bool)
    touches[faces] = True
    return mask | ~touches[lab]


def _build_1mm() -> dict[str, np.ndarray]:
    """Read the template, derive the brain mask and crop; compact numpy arrays at 1 mm (uint8 as in
    the files, the mask as bool: about 20 MB kept in memory for the other resolutions)."""
    from scipy import ndimage as ndi

    folder = template_dir()
    t1, affine = _read_canonical(folder / TEMPLATE_FILES["t1"])
    gm, _ = _read_canonical(folder / TEMPLATE_FILES["gm"])
    wm, _ = _read_canonical(folder / TEMPLATE_FILES["wm"])
    brain = (t1 > 0) | (gm.astype(np.float32) + wm.astype(np.float32) >= 0.5 * 255)
    brain = _fill_holes(_close(brain), ndi)

    idx = np.argwhere(brain)
    centre = (idx.min(0) + idx.max(0)) / 2.0
    start = [int(np.floor(c - (n - 1) / 2.0)) for c, n in zip(centre, CROP_SHAPE_MM)]
    shift = np.eye(4)
    shift[:3, 3] = start
    return {"t1": _crop(t1.astype(np.uint8), start, CROP_SHAPE_MM), "gm": _crop(gm.astype(np.uint8), start, CROP_SHAPE_MM),
            "wm": _crop(wm.astype(np.uint8), start, CROP_SHAPE_MM), "brain": _crop(brain, start, CROP_SHAPE_MM),
            "affine": affine @ shift}


_BASE: dict[str, np.ndarray] = {}


def _build(resolution: int) -> Volume:
    if not _BASE:
        _BASE.update(_build_1mm())
    base = _BASE
    r = resolution
    brain1 = base["brain"].astype(np.float32)
    gm = base["gm"].astype(np.float32) / 255.0 * brain1
    wm = base["wm"].astype(np.float32) / 255.0 * brain1
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain1
    t1 = _block_mean(base["t1"].astype(np.float32) / 255.0, r)
    tissues = np.stack([_block_mean(p, r) for p in (csf, gm, wm)])
    brain = _block_mean(brain1, r) >= 0.5
    tissues = tissues * brain
    # renormalise the probabilities inside the brain so they sum to 1
    total = tissues.sum(0, keepdims=True)
    tissues = np.where(total > 0, tissues / np.maximum(total, 1e-6), 0.0).astype(np.float32)
    labels = _labels_from(brain, tissues)
    block = np.diag([r, r, r, 1.0])
    block[:3, 3] = (r - 1) / 2.0
    affine = base["affine"] @ block
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))

    def t(a, dtype):
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)[None]

    return Volume(
        image=t(t1[None], torch.float32).clamp(0, 1),
        labels=t(labels[None], torch.int64),
        affine=torch.from_numpy(affine).to(torch.float64),
        spacing=spacing,
        tissues=t(tissues, torch.float32),
        name=f"MNI ICBM152 2009a T1 at {resolution} mm",
    )


def _cache_dir() -> Path | None:
    """Disk cache folder: ``$REGEDU_CACHE`` or ``~/.cache/regedu`` (``REGEDU_CACHE=0`` turns it off)."""
    env = os.environ.get("REGEDU_CACHE")
    if env is not None and env.strip().lower() in ("0", "", "off", "none"):
        return None
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "regedu"
    return base


def _disk_load(resolution: int) -> Volume | None:
    folder = _cache_dir()
    if folder is None:
        return None
    path = folder / f"mni152_2009a_{resolution}mm_v2.npz"
    try:
        with np.load(path) as z:
            return Volume(
                image=torch.from_numpy(z["image"]), labels=torch.from_numpy(z["labels"]).long(),
                affine=torch.from_numpy(z["affine"]), spacing=tuple(float(s) for s in z["spacing"]),
                tissues=torch.from_numpy(z["tissues"]), name=f"MNI ICBM152 2009a T1 at {resolution} mm",
            )
    except Exception:  # no cache yet, unreadable or from another version: rebuild
        return None


def _disk_save(resolution: int, vol: Volume) -> None:
    folder = _cache_dir()
    if folder is None:
        return
    assert vol.tissues is not None, "the template always carries its tissue maps"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".mni152_2009a_{resolution}mm_v2.{os.getpid()}.npz"
        np.savez(tmp, image=vol.image.numpy(), labels=vol.labels.to(torch.uint8).numpy(), affine=vol.affine.numpy(),
                 spacing=np.asarray(vol.spacing), tissues=vol.tissues.numpy())
        os.replace(tmp, folder / f"mni152_2009a_{resolution}mm_v2.npz")
    except OSError:  # read-only home, full disk, ...: the in-memory cache is enough
        pass


def _clone(v: Volume) -> Volume:
    return Volume(v.image.clone(), v.labels.clone(), v.affine.clone(), v.spacing,
                  None if v.tissues is None else v.tissues.clone(), v.name)


def load_brain(resolution: int = 2, size: int | Sequence[int] | None = None, device=None) -> Volume:
    """The MNI ICBM152 2009a brain template: T1 image, 4-class labels, affine and spacing.

    Args:
        resolution: voxel size in mm, one of 1, 2, 4 (shape 160x192x160, 80x96x80, 40x48x40).
        size: optional output shape (one int or 3): the volume is resampled isotropically about its
            centre so the whole crop fits, zero-padded (see :func:`regedu.data.volume.fit_volume`).
        device: where the tensors go (default CPU).

    Returns:
        :class:`Volume` with ``image`` ``(1, 1, D, H, W)`` float32 in ``[0, 1]`` (T1, 0 outside the
        brain), ``labels`` ``(1, 1, D, H, W)`` int64 (0 background, 1 CSF, 2 GM, 3 WM), ``affine``
        ``(4, 4)`` float64 voxel -> world (mm, RAS), ``spacing`` ``(r, r, r)`` and ``tissues``
        ``(1, 3, D, H, W)`` (CSF, GM, WM probabilities). Axes: 0 left->right, 1 posterior->anterior,
        2 inferior->superior.

    The first call reads and processes the files (about a second); later calls return a copy of a
    cached result (memory, and ``~/.cache/regedu`` or ``$REGEDU_CACHE`` on disk when writable).
    Data origin and citations: see the module docstring (:data:`CITATION`).
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"load_brain: resolution must be one of 1, 2, 4 (mm), got {resolution!r}")
    r = int(resolution)
    if r not in _CACHE:
        vol = _disk_load(r)
        if vol is None:
            vol = _build(r)
            _disk_save(r, vol)
        _CACHE[r] = vol
    vol = _clone(_CACHE[r])
    if size is not None:
        vol = fit_volume(vol, size)
    return vol.to(device) if device is not None else vol


PLANES = ("axial", "coronal", "sagittal")


def _slice_view(plane: str) -> tuple[int, list[int], list[bool]]:
    """Which volume axis is cut, which volume axes become (rows, columns), and which of those are flipped.

    Display orientation: axial rows run anterior -> posterior (front at the top), columns left -> right;
    coronal and sagittal rows run superior -> inferior (top of the head at the top); columns left ->
    right (coronal; the subject's left on the image's left, neurological convention) and anterior ->
    posterior (sagittal: the face on the left, as in matplotlib's head MRI ``load_head_mri``).
    """
    if plane == "axial":
        return 2, [1, 0], [True, False]
    if plane == "coronal":
        return 1, [2, 0], [True, False]
    return 0, [2, 1], [True, True]


def brain_slice(
    plane: str = "axial",
    index: int | None = None,
    resolution: int = 2,
    size: int | Sequence[int] | None = None,
    device=None,
) -> Volume:
    """A 2D slice of the brain template with its labels, oriented for display with ``plt.imshow``.

    Args:
        plane: ``"axial"`` (shape ``(96, 80)`` at 2 mm), ``"coronal"`` (``(80, 80)``) or
            ``"sagittal"`` (``(80, 96)``).
        index: slice index along the cut axis of the 3D volume at this resolution (``None``: the middle;
            negative values count from the end).
        resolution: 1, 2 or 4 mm.
        size: optional output shape, e.g. ``(128, 128)`` or ``96``: resampled isotropically about the
            centre so the whole slice fits, zero-padded; ``spacing`` and ``affine`` follow.

    Returns:
        :class:`Volume` with ``image`` ``(1, 1, H, W)`` float32 in ``[0, 1]``, ``labels`` ``(1, 1, H, W)``
        int64, ``tissues`` ``(1, 3, H, W)``, ``spacing`` ``(sy, sx)`` mm and ``affine`` ``(4, 4)``
        with ``world = affine @ (row, col, 0, 1)``. Rows run anterior->posterior (axial) or
        superior->inferior (coronal, sagittal); columns left->right (axial, coronal) or
        anterior->posterior (sagittal).
    """
    check_choice("brain_slice", "plane", plane, PLANES)
    key = (plane, index, resolution, None if size is None else (size if isinstance(size, int) else tuple(size)))
    if key in _SLICE_CACHE:
        v = _clone(_SLICE_CACHE[key])
        return v.to(device) if device is not None else v
    vol = load_brain(resolution)
    axis, (ra, ca), flips = _slice_view(plane)
    n = vol.shape[axis]
    if index is None:
        index = n // 2
    if not isinstance(index, (int, np.integer)) or not -n <= index < n:
        raise ValueError(f"brain_slice: index must be an integer in [-{n}, {n - 1}] for the {plane} plane "
                         f"at {resolution} mm, got {index!r}")
    index = int(index) % n

    def cut(t: torch.Tensor) -> torch.Tensor:
        s = t.select(2 + axis, index)  # (1, C, a, b) with a, b the remaining volume axes in order
        rest = [a for a in range(3) if a != axis]
        s = s.permute(0, 1, 2 + rest.index(ra), 2 + rest.index(ca))
        dims = [2 + k for k, f in enumerate(flips) if f]
        return s.flip(dims).contiguous() if dims else s.contiguous()

    # affine: slice pixel (row, col, 0) -> volume voxel -> world
    rows, cols = vol.shape[ra], vol.shape[ca]
    M = torch.zeros(4, 4, dtype=torch.float64)
    M[ra, 0] = -1.0 if flips[0] else 1.0
    M[ra, 3] = rows - 1 if flips[0] else 0.0
    M[ca, 1] = -1.0 if flips[1] else 1.0
    M[ca, 3] = cols - 1 if flips[1] else 0.0
    M[axis, 2] = 1.0
    M[axis, 3] = float(index)
    M[3, 3] = 1.0
    sl = Volume(
        image=cut(vol.image), labels=cut(vol.labels), affine=vol.affine @ M,
        spacing=(vol.spacing[ra], vol.spacing[ca]), tissues=None if vol.tissues is None else cut(vol.tissues),
        name=f"{vol.name}, {plane} slice {index}",
    )
    if size is not None:
        sl = fit_volume(sl, size)
    _SLICE_CACHE[key] = _clone(sl)
    return sl.to(device) if device is not None else sl


__all__ = ["CITATION", "LABEL_NAMES", "Volume", "brain_slice", "load_brain", "template_dir"]
