r"""NIfTI input/output: images, label maps and displacement fields, with their place in the world.

A NIfTI file stores a voxel array and an affine matrix ``A`` (4 x 4) that maps a voxel index
``(i, j, k)`` to world coordinates in mm: ``(x, y, z, 1)^T = A (i, j, k, 1)^T``. By default
:func:`load_nifti` reorients the array to the closest canonical orientation (RAS+: array axis 0 runs
to the subject's Right, axis 1 Anterior, axis 2 Superior; ``nibabel.as_closest_canonical``), so
every scan loaded here has the same axis meaning. **The tensor's spatial axes are the array axes**:
a tensor ``(1, 1, D, H, W)`` has ``D`` along array axis 0, and voxel coordinates
``(i, j, k)`` (tensor axis order) go straight into ``A`` (:func:`voxel_to_world`,
:func:`world_to_voxel`). Inside the library all maths is in voxels; world coordinates only appear here.

Displacement fields (:func:`save_dvf`, :func:`load_dvf`) are stored as 5D NIfTI vector images of
shape ``(X, Y, Z, 1, 3)`` with intent ``vector`` (the layout ITK-SNAP, FSLeyes, ITK and ANTs read).
By default the three components are **millimetres along the world axes of the file (RAS+, the
NIfTI convention)**: ``d_world = A[:3, :3] @ u_voxel``. Tools built on ITK (ANTs, ITK-SNAP's
registration, SimpleITK) expect displacement vectors in LPS instead; ``itk=True`` writes that
(x and y negated). The field keeps regedu's pull-back meaning, which is also ITK's: the vector at a
fixed-image point points to where the moving image is sampled.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._checks import check_dvf, check_tensor

PathLike = str | os.PathLike


def _nib():
    import nibabel as nib

    return nib


def _check_affine(fn: str, A: np.ndarray, where: str = "affine") -> np.ndarray:
    """Raise unless ``A`` is a finite, invertible 4 x 4 voxel -> world matrix with last row (0, 0, 0, 1)."""
    if A.shape != (4, 4) or not np.all(np.isfinite(A)):
        raise ValueError(f"{fn}: {where} must be a finite 4 x 4 matrix (voxel -> world mm), got "
                         + (f"shape {A.shape}" if A.shape != (4, 4) else "non-finite entries (NaN or inf)"))
    if not np.allclose(A[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{fn}: {where} must have last row (0, 0, 0, 1), got {A[3].tolist()}")
    cols = np.linalg.norm(A[:3, :3], axis=0)
    if np.min(cols) <= 0 or abs(np.linalg.det(A[:3, :3])) <= 1e-8 * np.prod(cols):
        raise ValueError(f"{fn}: {where} is singular (det of its 3 x 3 part = {np.linalg.det(A[:3, :3]):.3g}, "
                         f"column norms = voxel sizes {np.round(cols, 4).tolist()}): voxels would have no volume; "
                         f"expected an invertible voxel -> world matrix")
    return A


def _check_spacing(fn: str, spacing, ndim: int) -> tuple[float, ...]:
    try:
        sp = tuple(float(s) for s in spacing)
    except TypeError:
        sp = (float(spacing),) * ndim
    if len(sp) != ndim:
        raise ValueError(f"{fn}: spacing must have one value per spatial axis ({ndim} for this {ndim}D image), "
                         f"got {len(sp)}: {sp}")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"{fn}: spacing must be positive finite voxel sizes in mm, got {sp}")
    return sp


def _as_affine(fn: str, affine, default_spacing: Sequence[float] | None = None) -> np.ndarray:
    if affine is None:
        A = np.eye(4)
        if default_spacing is not None:
            A[: len(default_spacing), : len(default_spacing)] = np.diag([float(s) for s in default_spacing])
        return A
    A = affine.detach().cpu().double().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine, dtype=np.float64)
    return _check_affine(fn, A)


def _check_target(fn: str, path: PathLike, overwrite: bool) -> Path:
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{fn}: '{p}' is a folder, expected a file name ending in .nii or .nii.gz")
    if not p.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{fn}: path must end in .nii or .nii.gz, got '{p}'")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{fn}: '{p}' already exists; pass overwrite=True to replace it")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"{fn}: the folder '{p.parent}' does not exist (create it first)")
    return p


# deflate never compresses by more than about 1032:1, so a .nii.gz cannot hold more than this many bytes
_MAX_DEFLATE_RATIO = 1032


def _check_size(fn: str, p: Path, img) -> None:
    """Raise ``ValueError`` when the header claims more voxel data than the file can hold (before allocating)."""
    hdr = img.header
    n_vox = int(np.prod([int(s) for s in img.shape], dtype=object)) if len(img.shape) else 1
    need = n_vox * hdr.get_data_dtype().itemsize + int(hdr.get_data_offset())
    size = p.stat().st_size
    if p.name.endswith(".gz"):
        with open(p, "rb") as f:  # a gzip member ends with its uncompressed size modulo 2**32
            f.seek(max(size - 4, 0))
            isize = int.from_bytes(f.read(4), "little")
        too_big = need > _MAX_DEFLATE_RATIO * size or (need < 2**32 and isize < need)
        have = f"{size} compressed bytes ({isize} uncompressed)"
    else:
        too_big = need > size
        have = f"{size} bytes"
    if too_big:
        raise ValueError(f"{fn}: '{p}' is truncated or its header is corrupt: the header claims shape "
                         f"{tuple(int(s) for s in img.shape)} of {hdr.get_data_dtype()} ({need} bytes with the header), "
                         f"but the file holds {have}")


def _open(fn: str, path: PathLike, canonical: bool):
    """Load a NIfTI header and image with clear errors for missing or unreadable files."""
    nib = _nib()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{fn}: no such file: '{p}'")
    if p.is_dir():
        raise IsADirectoryError(f"{fn}: '{p}' is a folder, expected a NIfTI file (.nii or .nii.gz)")
    try:
        img = nib.load(str(p))
    except Exception as err:  # ImageFileError, gzip errors, bad headers
        raise ValueError(f"{fn}: '{p}' is not a readable NIfTI file (corrupt, truncated or another format): {err}") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{fn}: '{p}' is a {type(img).__name__}, expected a NIfTI-1 or NIfTI-2 file (.nii or .nii.gz)")
    dtype = img.get_data_dtype()
    if dtype.kind == "c":
        raise TypeError(f"{fn}: '{p}' holds complex voxels ({dtype}), which are not supported; expected real "
                        f"numbers (integer or floating point); save the magnitude instead")
    if dtype.kind not in "biuf":
        raise TypeError(f"{fn}: '{p}' holds voxels of type {dtype} (e.g. RGB colour), which is not supported; "
                        f"expected one real number per voxel (integer or floating point)")
    _check_size(fn, p, img)
    _check_affine(fn, np.asarray(img.affine, dtype=np.float64), where=f"the affine of '{p}'")
    if canonical:
        img = nib.as_closest_canonical(img)
    return img


def _read(fn: str, path: PathLike, img) -> np.ndarray:
    try:
        return np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, ValueError) as err:
        raise ValueError(f"{fn}: '{path}' is truncated or corrupt: its voxel data cannot be read ({err})") from err
    except MemoryError as err:
        raise MemoryError(f"{fn}: not enough memory to read '{path}' (shape {tuple(img.shape)} of "
                          f"{img.get_data_dtype()}); crop or downsample it with another tool first") from err


def _spacing(A: np.ndarray, n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.linalg.norm(A[:3, :n], axis=0))


def load_nifti(
    path: PathLike,
    ndim: int = 3,
    canonical: bool | None = None,
    labels: bool = False,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, ...]]:
    """Load a NIfTI image (``.nii`` or ``.nii.gz``) as a tensor with its affine and voxel spacing.

    Args:
        path: the file.
        ndim: 3 for a volume (default) or 2 for a single slice (``(X, Y)`` or ``(X, Y, 1)``). Trailing
            axes of length 1 are dropped; anything else with more axes (e.g. a 4D time series) is an error.
        canonical: reorient to the closest canonical (RAS+) orientation first. Default: yes for
            volumes, no for slices (a slice saved by :func:`save_nifti` then loads as it was saved).
        labels: return an int64 label map (the file must hold integers) instead of float32 intensities.

    Returns:
        ``(tensor, affine, spacing)``: ``(1, 1, *S)`` float32 (raw intensities, not rescaled) or int64,
        ``(4, 4)`` float64 voxel -> world (mm) matrix of the (reoriented) array, voxel size in mm per axis.

    Raises:
        FileNotFoundError: no such file. ValueError: not a NIfTI file, truncated/corrupt data, wrong
        number of dimensions, non-integer labels. TypeError: complex or RGB voxels.
    """
    if ndim not in (2, 3):
        raise ValueError(f"load_nifti: ndim must be 2 or 3, got {ndim!r}")
    img = _open("load_nifti", path, ndim == 3 if canonical is None else canonical)
    shape = tuple(img.shape)
    while len(shape) > ndim and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != ndim:
        raise ValueError(f"load_nifti: '{path}' holds a {len(img.shape)}D image of shape {tuple(img.shape)}; expected a "
                         f"{ndim}D image" + (" (a 4D series? load one volume with nibabel: img.slicer[..., t])"
                                             if len(shape) == 4 else ""))
    data = _read("load_nifti", path, img).reshape(shape)
    A = np.asarray(img.affine, dtype=np.float64)
    if labels:
        if data.dtype.kind == "f":
            if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
                raise ValueError(f"load_nifti: '{path}' holds non-integer values; labels=True needs a label map of "
                                 f"integer classes")
        if data.size and (data.max() > np.iinfo(np.int64).max or data.min() < np.iinfo(np.int64).min):
            raise ValueError(f"load_nifti: '{path}' holds label values up to {data.max()}, beyond int64 "
                             f"(the dtype of label tensors); they cannot be loaded without changing them")
        t = torch.from_numpy(np.ascontiguousarray(data).astype(np.int64))
    else:
        t = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    t = t.reshape(1, 1, *shape)
    return (t.to(device) if device is not None else t), torch.from_numpy(A), _spacing(A, ndim)


def _to_array(fn: str, tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(tensor, np.ndarray):
        tensor = torch.from_numpy(tensor)
    tensor = check_tensor(fn, "tensor", tensor)
    t = tensor.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()  # NumPy has no bfloat16; half precision is stored as float32 (every value kept)
    if t.dim() in (4, 5):
        if t.shape[0] != 1 or t.shape[1] != 1:
            raise ValueError(f"{fn}: tensor must hold one image (1, 1, *S) (or just *S), got shape {tuple(t.shape)}")
        t = t[0, 0]
    if t.dim() not in (2, 3):
        raise ValueError(f"{fn}: tensor must be (1, 1, H, W), (1, 1, D, H, W), (H, W) or (D, H, W), got shape "
                         f"{tuple(tensor.shape)}")
    return t.numpy()


def _label_dtype(lo: int, hi: int) -> type:
    """The smallest NIfTI integer type that holds every value in ``[lo, hi]`` exactly."""
    for t in (np.uint8, np.int16, np.int32, np.uint32, np.int64):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return t
    return np.uint64


def save_nifti(
    path: PathLike,
    tensor: torch.Tensor | np.ndarray,
    affine=None,
    spacing: Sequence[float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save an image or a label map as NIfTI (``.nii.gz`` compresses).

    ``tensor`` ``(1, 1, *S)`` or ``S``; a 2D image is saved as one slice ``(H, W, 1)``. Floating
    tensors are stored as float32 (float64 as float64); integer and bool tensors (label maps) as the
    smallest of uint8, int16, int32, uint32, int64 that holds every value exactly (so no label value
    changes in a save/load round trip), with intent ``label`` so viewers show them as segmentations.
    ``affine``: 4 x 4 voxel -> world mm (e.g. a :class:`Volume`'s), finite and invertible; default
    ``diag(spacing)`` (``spacing``: one positive value per spatial axis, default 1 mm; giving both is
    an error). The array axes are the tensor's spatial axes. An existing file is only replaced with
    ``overwrite=True`` (else ``FileExistsError``). Returns the path.
    """
    nib = _nib()
    a = _to_array("save_nifti", tensor)
    if spacing is not None:
        if affine is not None:
            raise ValueError("save_nifti: give either affine or spacing (the affine already holds the voxel size), not both")
        spacing = _check_spacing("save_nifti", spacing, a.ndim)
    A = _as_affine("save_nifti", affine, spacing)
    p = _check_target("save_nifti", path, overwrite)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.dtype.kind in "biu":
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        out = _label_dtype(lo, hi)
        img = nib.Nifti1Image(a.astype(out), A, dtype=out)
        img.header.set_intent("label")
    elif a.dtype.kind == "f":
        out = np.float64 if a.dtype == np.float64 else np.float32
        img = nib.Nifti1Image(a.astype(out), A, dtype=out)
    else:
        raise TypeError(f"save_nifti: tensor must hold real numbers (float or integer), got dtype {a.dtype}")
    img.header.set_xyzt_units("mm")
    img.set_qform(A, code=1)
    img.set_sform(A, code=1)
    nib.save(img, str(p))
    return p


def save_dvf(path: PathLike, dvf: torch.Tensor, affine=None, units: str = "mm", itk: bool = False,
             overwrite: bool = False) -> Path:
    """Save a displacement field ``(1, ndim, *S)`` (voxels, tensor axis order) as a 5D vector NIfTI.

    The file has shape ``(X, Y, Z, 1, 3)`` and intent ``vector``. ``units="mm"`` (default) stores
    world-axis millimetres ``A[:3, :3] @ u`` (RAS+, or LPS with ``itk=True`` for ITK/ANTs/SimpleITK);
    ``units="voxel"`` stores the voxel displacements as they are (channel ``k`` along array axis ``k``;
    3 components, the third 0 for 2D). The unit is written into the header's ``descrip`` and read
    back by :func:`load_dvf`. An existing file is only replaced with ``overwrite=True``. Returns the path.
    """
    nib = _nib()
    dvf = check_dvf("save_dvf", "dvf", dvf)
    if dvf.shape[0] != 1:
        raise ValueError(f"save_dvf: dvf must hold one field (batch 1), got batch {dvf.shape[0]}")
    if units not in ("mm", "voxel"):
        raise ValueError(f"save_dvf: units must be 'mm' or 'voxel', got {units!r}")
    ndim = dvf.shape[1]
    A = _as_affine("save_dvf", affine)
    p = _check_target("save_dvf", path, overwrite)
    u = dvf[0].detach().cpu().double().numpy()  # (ndim, *S)
    if ndim == 2:
        u = np.concatenate([u, np.zeros_like(u[:1])])[..., None]  # (3, H, W, 1)
    vec = np.moveaxis(u, 0, -1)  # (X, Y, Z, 3) voxel components
    if units == "mm":
        vec = vec @ A[:3, :3].T
        if itk:
            vec = vec * np.array([-1.0, -1.0, 1.0])
    elif itk:
        raise ValueError("save_dvf: itk=True needs units='mm' (ITK reads physical displacements)")
    img = nib.Nifti1Image(vec[:, :, :, None, :].astype(np.float32), A)
    img.header.set_intent("vector", (), name="displacement")
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = f"regedu DVF units={units}{' LPS' if itk else ''}".encode()
    img.set_qform(A, code=1)
    img.set_sform(A, code=1)
    nib.save(img, str(p))
    return p


def load_dvf(path: PathLike, ndim: int = 3, canonical: bool = True, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a displacement field saved by :func:`save_dvf` (or any ``(X, Y, Z, 1, 3)`` vector NIfTI in mm).

    Returns ``(dvf, affine)`` with ``dvf`` ``(1, ndim, *S)`` float32 in **voxels** of the (reoriented)
    array, tensor axis order, and the ``(4, 4)`` affine. Files without regedu's ``descrip`` are taken
    to hold RAS millimetres.
    """
    nib = _nib()
    img = _open("load_dvf", path, canonical=False)
    shape = tuple(img.shape)
    if len(shape) != 5 or shape[3] != 1 or shape[4] != 3:
        raise ValueError(f"load_dvf: '{path}' has shape {shape}; expected a displacement field (X, Y, Z, 1, 3)")
    vec = _read("load_dvf", path, img).reshape(*shape[:3], 3).astype(np.float64)
    A = np.asarray(img.affine, dtype=np.float64)
    descrip = bytes(img.header["descrip"]).decode(errors="ignore")
    # to world millimetres (RAS) first: they do not change when the array is reoriented
    if "units=voxel" in descrip:
        vec = vec @ A[:3, :3].T
    elif "LPS" in descrip:
        vec = vec * np.array([-1.0, -1.0, 1.0])
    if canonical:
        ornt = nib.orientations.io_orientation(A)
        vec = nib.orientations.apply_orientation(vec, ornt)
        A = A @ nib.orientations.inv_ornt_aff(ornt, shape[:3])
    vec = vec @ np.linalg.inv(A[:3, :3]).T
    u = np.moveaxis(vec, -1, 0)
    if ndim == 2:
        if shape[2] != 1:
            raise ValueError(f"load_dvf: '{path}' is 3D (shape {shape}); ndim=2 needs a single slice (X, Y, 1, 1, 3)")
        u = u[:2, :, :, 0]
    t = torch.from_numpy(np.ascontiguousarray(u, dtype=np.float32))[None]
    return (t.to(device) if device is not None else t), torch.from_numpy(A)


def voxel_to_world(points, affine) -> torch.Tensor:
    """World coordinates (mm) of voxel coordinates ``(..., 3)`` (or ``(..., 2)`` for a slice: the third is 0).

    ``points`` are in tensor axis order, e.g. ``(i, j, k)`` indexes ``image[0, 0, i, j, k]``.
    """
    A = torch.as_tensor(_as_affine("voxel_to_world", affine))
    p = torch.as_tensor(points, dtype=torch.float64)
    if p.shape[-1] == 2:
        p = torch.cat([p, torch.zeros_like(p[..., :1])], -1)
    if p.shape[-1] != 3:
        raise ValueError(f"voxel_to_world: points must have 2 or 3 coordinates in the last axis, got shape {tuple(p.shape)}")
    return p @ A[:3, :3].T + A[:3, 3]


def world_to_voxel(points, affine) -> torch.Tensor:
    """Voxel coordinates ``(..., 3)`` (tensor axis order, fractional) of world points ``(..., 3)`` in mm."""
    A = torch.as_tensor(_as_affine("world_to_voxel", affine))
    p = torch.as_tensor(points, dtype=torch.float64)
    if p.shape[-1] != 3:
        raise ValueError(f"world_to_voxel: points must have 3 coordinates (x, y, z in mm) in the last axis, got shape "
                         f"{tuple(p.shape)}")
    Ainv = torch.linalg.inv(A)
    return p @ Ainv[:3, :3].T + Ainv[:3, 3]


__all__ = ["load_dvf", "load_nifti", "save_dvf", "save_nifti", "voxel_to_world", "world_to_voxel"]
