"""A second real scan: the 2D head MRI (with skull) that ships with matplotlib.

``mpl-data/sample_data/s1045.ima.gz`` is a 256 x 256 sagittal slice of a head MRI (face on the left) stored as gzip-compressed
raw big-endian unsigned 16-bit integers (the image of matplotlib's ``image_demo`` example). Unlike the
brain-extracted MNI template it shows the skull, scalp and background, which makes it a good moving
image for affine exercises and, with :func:`regedu.data.t2_like`-style intensity remapping, for
multi-modal ones. Its pixel size is not recorded; treat it as 1 x 1 (pixel units).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

HEAD_MRI_SHAPE = (256, 256)
_HEAD: torch.Tensor | None = None


def _head_mri_path() -> Path:
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "mpl-data" / "sample_data" / "s1045.ima.gz"
        if path.is_file():
            return path
    from matplotlib import cbook  # older layouts: let matplotlib find its sample data

    return Path(cbook.get_sample_data("s1045.ima.gz", asfileobj=False))


def load_head_mri(device=None) -> torch.Tensor:
    """matplotlib's 2D head MRI ``s1045``: ``(1, 1, 256, 256)`` float32 in ``[0, 1]`` (divided by its maximum).

    Rows run top to bottom as in ``plt.imshow``. Cached after the first call (a copy is returned).
    """
    global _HEAD
    if _HEAD is None:
        path = _head_mri_path()
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError) as err:
            raise OSError(f"load_head_mri: cannot read matplotlib's sample scan {path}: {err}") from err
        n = HEAD_MRI_SHAPE[0] * HEAD_MRI_SHAPE[1] * 2
        if len(raw) != n:
            raise OSError(f"load_head_mri: {path} holds {len(raw)} bytes, expected {n} (256 x 256 uint16)")
        a = np.frombuffer(raw, dtype=">u2").reshape(HEAD_MRI_SHAPE).astype(np.float32)
        _HEAD = torch.from_numpy(a / a.max())[None, None]
    out = _HEAD.clone()
    return out.to(device) if device is not None else out


__all__ = ["load_head_mri"]
