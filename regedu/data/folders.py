r"""Point the course at your own scans: read a folder of NIfTI files (with optional label maps and landmarks).

Two layouts are understood (``read_folder(root)`` detects which):

**Learn2Reg task layout** (what the Learn2Reg challenge's downloads contain, e.g. OASIS, NLST, AbdomenCTCT)::

    root/
      imagesTr/OASIS_0001_0000.nii.gz      images
      labelsTr/OASIS_0001_0000.nii.gz      label maps, same file name as the image (optional)
      keypointsTr/OASIS_0001_0000.csv      landmarks, one "i,j,k" voxel coordinate per line (optional)
      OASIS_dataset.json                   optional: its "training" list (image/label/keypoints paths)
                                           and "registration_val" pairs (fixed/moving) are used if present

**One folder per subject**::

    root/
      subject01/t1.nii.gz                  the image: the NIfTI whose name has no "label"/"seg"/"mask"
      subject01/labels.nii.gz              label map: a NIfTI with "label" or "seg" in its name (optional)
      subject01/landmarks.csv              landmarks, voxel coordinates as above (optional)
      subject02/...

Reading checks the whole folder from the headers (fast, no voxel data): a label map whose shape or
affine differs from its image, an image without a label when other images have one, a label without
an image, a file that is not NIfTI (``.mha``, ``.nrrd``, DICOM, ...) or a NIfTI that cannot be read
each raise an error naming the file. ``README*``, ``*.json``, ``*.md``, ``*.txt`` and hidden files are
ignored. :meth:`Scan.load` then reads one scan as a :class:`~regedu.data.Volume`, reoriented to RAS+,
with its landmarks (``volume.points``) moved along; :mod:`regedu.data.preprocess` does the rest.

Nothing here downloads anything: get OASIS or a Learn2Reg task from its website yourself (they have
their own data-use terms), unpack it, and pass the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .volume import Volume

NIFTI = (".nii", ".nii.gz")
IGNORED_SUFFIXES = (".json", ".md", ".txt", ".rst")
LANDMARK_SUFFIXES = (".csv",)


def _is_nifti(p: Path) -> bool:
    return p.name.endswith(NIFTI)


def _stem(p: Path) -> str:
    for s in (".nii.gz", ".nii", ".csv"):
        if p.name.endswith(s):
            return p.name[: -len(s)]
    return p.stem


def _ignored(p: Path) -> bool:
    return p.name.startswith(".") or p.name.lower().startswith("readme") or p.name.endswith(IGNORED_SUFFIXES)


def _unexpected(p: Path, where: str) -> ValueError:
    return ValueError(f"read_folder: '{p}' in {where} is not a NIfTI file (.nii or .nii.gz); convert it first "
                      f"(e.g. with SimpleITK: sitk.WriteImage(sitk.ReadImage(path), 'scan.nii.gz')) or move it out")


def _header(p: Path):
    import nibabel as nib

    try:
        img = nib.load(str(p))
    except Exception as err:
        raise ValueError(f"read_folder: '{p}' is not a readable NIfTI file: {err}") from err
    return img


def read_landmarks(path: str | Path) -> torch.Tensor:
    """Landmarks from a CSV file: one point per line, ``ndim`` comma-separated voxel coordinates (array axis
    order of the NIfTI file, 0-based); a header line is skipped. Returns ``(N, ndim)`` float64."""
    p = Path(path)
    rows = []
    for k, line in enumerate(p.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rows.append([float(v) for v in line.replace(";", ",").split(",")])
        except ValueError:
            if k == 0:
                continue  # a header
            raise ValueError(f"read_landmarks: line {k + 1} of '{p}' is not a list of numbers: {line!r}") from None
    if not rows:
        raise ValueError(f"read_landmarks: '{p}' holds no landmarks")
    widths = {len(r) for r in rows}
    if len(widths) != 1 or widths.pop() not in (2, 3):
        raise ValueError(f"read_landmarks: every line of '{p}' must hold 2 or 3 coordinates, got widths "
                         f"{sorted({len(r) for r in rows})}")
    a = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"read_landmarks: '{p}' holds non-finite coordinates")
    return torch.from_numpy(a)


@dataclass
class Scan:
    """One scan of a folder: its name and file paths (label and landmarks optional)."""

    name: str
    image: Path
    label: Path | None = None
    keypoints: Path | None = None

    def load(self, canonical: bool = True, device=None) -> Volume:
        """Read the scan as a :class:`Volume`: ``image`` float32 raw intensities (use
        :func:`regedu.data.preprocess.normalise`), ``labels`` int64 from the label file (else zeros),
        ``points`` the landmarks in voxels; reoriented to RAS+ with ``canonical`` (points moved along)."""
        from .nifti import load_nifti
        from .preprocess import reorient

        image, A, spacing = load_nifti(self.image, canonical=False)
        if self.label is not None:
            labels, _, _ = load_nifti(self.label, canonical=False, labels=True)
            if labels.shape != image.shape:
                raise ValueError(f"Scan.load: label map '{self.label}' has shape {tuple(labels.shape[2:])}, but its "
                                 f"image '{self.image}' has {tuple(image.shape[2:])}")
        else:
            labels = torch.zeros(image.shape, dtype=torch.int64)
        points = read_landmarks(self.keypoints) if self.keypoints is not None else None
        v = Volume(image, labels, A, spacing, name=self.name, points=points)
        if canonical:
            v = reorient(v)
        return v.to(device) if device is not None else v


@dataclass
class ScanFolder:
    """The scans of a folder (:func:`read_folder`), in name order, and registration pairs if the dataset lists any."""

    root: Path
    layout: str
    scans: list[Scan]
    pairs: list[tuple[str, str]] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, key: int | str) -> Scan:
        if isinstance(key, str):
            for s in self.scans:
                if s.name == key:
                    return s
            raise KeyError(f"ScanFolder: no scan named {key!r}; scans: {[s.name for s in self.scans][:10]}")
        return self.scans[key]

    @property
    def names(self) -> list[str]:
        """The scans' names."""
        return [s.name for s in self.scans]

    def __repr__(self) -> str:
        n_lab = sum(s.label is not None for s in self.scans)
        n_kp = sum(s.keypoints is not None for s in self.scans)
        return (f"ScanFolder('{self.root}', layout={self.layout!r}, {len(self.scans)} scans, {n_lab} with labels, "
                f"{n_kp} with landmarks, {len(self.pairs)} pairs)")


def _check_pairs_of_files(scans: list[Scan]) -> None:
    for s in scans:
        if s.label is None:
            continue
        a, b = _header(s.image), _header(s.label)
        if tuple(a.shape[:3]) != tuple(b.shape[:3]):
            raise ValueError(f"read_folder: label map '{s.label}' has shape {tuple(b.shape)}, but its image '{s.image}' "
                             f"has {tuple(a.shape)}; they must be on the same grid")
        if not np.allclose(a.affine, b.affine, atol=1e-3):
            raise ValueError(f"read_folder: label map '{s.label}' and image '{s.image}' have different affines (world "
                             f"positions); they must be on the same grid")


def _learn2reg(root: Path) -> ScanFolder:
    images_dir, labels_dir, kp_dir = root / "imagesTr", root / "labelsTr", root / "keypointsTr"
    jsons = sorted(p for p in root.glob("*.json") if p.is_file())
    info: dict = {}
    for j in jsons:
        try:
            d = json.loads(j.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"read_folder: '{j}' is not valid JSON: {err}") from err
        if isinstance(d, dict) and "training" in d:
            info = d
            info["_file"] = str(j)
            break

    def resolve(rel: str, key: str) -> Path:
        p = (root / rel).resolve()
        if not p.is_file():
            raise FileNotFoundError(f"read_folder: {info['_file']} lists {key} '{rel}', which does not exist in '{root}'")
        return p

    scans: list[Scan] = []
    if info:
        for entry in info["training"]:
            img = resolve(entry["image"], "image")
            if not _is_nifti(img):
                raise _unexpected(img, info["_file"])
            lab = resolve(entry["label"], "label") if entry.get("label") else None
            kp = resolve(entry["keypoints"], "keypoints") if entry.get("keypoints") else None
            scans.append(Scan(_stem(img), img, lab, kp))
    else:
        if not images_dir.is_dir():
            raise FileNotFoundError(f"read_folder: '{root}' has no imagesTr/ folder (Learn2Reg layout)")
        files = sorted(p for p in images_dir.iterdir() if not _ignored(p))
        for p in files:
            if not _is_nifti(p):
                raise _unexpected(p, "imagesTr/")
        labels = {}
        if labels_dir.is_dir():
            for p in sorted(labels_dir.iterdir()):
                if _ignored(p):
                    continue
                if not _is_nifti(p):
                    raise _unexpected(p, "labelsTr/")
                labels[_stem(p)] = p
        kps = {_stem(p): p for p in sorted(kp_dir.glob("*.csv"))} if kp_dir.is_dir() else {}
        names = {_stem(p) for p in files}
        for stem, p in labels.items():
            if stem not in names:
                raise ValueError(f"read_folder: label map '{p}' has no image (expected imagesTr/{p.name})")
        for p in files:
            stem = _stem(p)
            if labels and stem not in labels:
                raise ValueError(f"read_folder: image '{p}' has no label map (expected labelsTr/{p.name}); other "
                                 f"images have one. Add it, or remove labelsTr/ to read images only")
            scans.append(Scan(stem, p, labels.get(stem), kps.get(stem)))
    pairs = []
    for key in ("registration_val", "registration_test"):
        for entry in info.get(key, []) or []:
            if isinstance(entry, dict) and "fixed" in entry and "moving" in entry:
                pairs.append((_stem(Path(entry["fixed"])), _stem(Path(entry["moving"]))))
    return ScanFolder(root, "learn2reg", scans, pairs, {k: v for k, v in info.items() if k != "_file"})


def _subjects(root: Path) -> ScanFolder:
    scans = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images, labels, kps = [], [], []
        for p in sorted(sub.iterdir()):
            if _ignored(p) or p.is_dir():
                continue
            if p.name.endswith(LANDMARK_SUFFIXES):
                kps.append(p)
            elif not _is_nifti(p):
                raise _unexpected(p, f"subject folder '{sub.name}'")
            elif any(w in p.name.lower() for w in ("label", "seg")):
                labels.append(p)
            elif "mask" in p.name.lower():
                continue
            else:
                images.append(p)
        for kind, found in (("image", images), ("label map", labels), ("landmark file", kps)):
            if len(found) > 1:
                raise ValueError(f"read_folder: subject folder '{sub}' holds {len(found)} {kind}s "
                                 f"({', '.join(p.name for p in found)}); keep one per subject")
        if not images:
            if labels or kps:
                raise ValueError(f"read_folder: subject folder '{sub}' has a label map or landmarks but no image")
            continue
        scans.append(Scan(sub.name, images[0], labels[0] if labels else None, kps[0] if kps else None))
    if not scans:
        raise ValueError(f"read_folder: no subject folders with a NIfTI image in '{root}'")
    return ScanFolder(root, "subjects", scans)


def read_folder(root: str | Path, layout: str = "auto", check: bool = True) -> ScanFolder:
    """Read a folder of scans in the Learn2Reg layout (``imagesTr/``...) or one folder per subject.

    Args:
        root: the folder. layout: ``"learn2reg"``, ``"subjects"`` or ``"auto"`` (``imagesTr/`` or a dataset
            JSON present -> Learn2Reg, else subjects).
        check: read every header and check each label map against its image (shape and affine).

    Returns:
        :class:`ScanFolder` (``folder[i]`` or ``folder["name"]`` is a :class:`Scan`; ``.load()`` reads it).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"read_folder: no such folder: '{root}'")
    if layout not in ("auto", "learn2reg", "subjects"):
        raise ValueError(f"read_folder: layout must be 'auto', 'learn2reg' or 'subjects', got {layout!r}")
    if layout == "auto":
        layout = "learn2reg" if (root / "imagesTr").is_dir() or any(root.glob("*.json")) else "subjects"
    folder = _learn2reg(root) if layout == "learn2reg" else _subjects(root)
    if not folder.scans:
        raise ValueError(f"read_folder: no images found in '{root}'")
    if check:
        for s in folder.scans:
            _header(s.image)
        _check_pairs_of_files(folder.scans)
    return folder


__all__ = ["Scan", "ScanFolder", "read_folder", "read_landmarks"]
