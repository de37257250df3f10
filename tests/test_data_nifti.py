"""Tests of regedu.data's NIfTI I/O: round trips, orientation, world coordinates, DVFs, clear errors.

Offline: the autouse fixture makes any network connection attempt fail.
"""

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from regedu import data


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path):
    """No writes to the user's cache folder (the network guard is in conftest.py, for every test)."""
    monkeypatch.setenv("REGEDU_CACHE", str(tmp_path / "cache"))
    yield


def test_image_and_label_round_trip(tmp_path):
    v = data.load_brain(4)
    p = data.save_nifti(tmp_path / "t1.nii.gz", v.image, v.affine)
    img, A, sp = data.load_nifti(p)
    assert torch.equal(img, v.image) and torch.equal(A, v.affine) and sp == (4.0, 4.0, 4.0)
    q = data.save_nifti(tmp_path / "labels.nii.gz", v.labels, v.affine)
    lab, A2, _ = data.load_nifti(q, labels=True)
    assert lab.dtype == torch.int64 and torch.equal(lab, v.labels) and torch.equal(A2, v.affine)
    hdr = nib.load(str(q)).header
    assert hdr.get_data_dtype() == np.uint8 and hdr.get_intent()[0] == "label"
    big = data.save_nifti(tmp_path / "big.nii", v.labels * 1000)
    assert nib.load(str(big)).get_data_dtype() == np.int16
    assert torch.equal(data.load_nifti(big, labels=True)[0], v.labels * 1000)


def test_slice_round_trip_keeps_world_coordinates(tmp_path):
    s = data.brain_slice("coronal", resolution=4)
    p = data.save_nifti(tmp_path / "slice.nii.gz", s.labels, s.affine)
    lab, A, sp = data.load_nifti(p, ndim=2, labels=True)
    assert torch.equal(lab, s.labels) and torch.allclose(A, s.affine) and sp == (4.0, 4.0)


def test_reorientation_to_canonical(tmp_path):
    """A file stored left-right flipped (LAS) loads as RAS: same world position, same value."""
    v = data.load_brain(4)
    arr = v.image[0, 0].numpy()[::-1].copy()
    A = v.affine.numpy().copy()
    A[:3, 0] *= -1
    A[:3, 3] = v.affine.numpy()[:3, 3] + v.affine.numpy()[:3, 0] * (arr.shape[0] - 1)
    nib.save(nib.Nifti1Image(arr, A), str(tmp_path / "las.nii.gz"))
    img, A2, _ = data.load_nifti(tmp_path / "las.nii.gz")
    assert torch.equal(img, v.image) and torch.allclose(A2, v.affine)
    raw, A3, _ = data.load_nifti(tmp_path / "las.nii.gz", canonical=False)
    assert torch.equal(raw[0, 0], torch.from_numpy(arr)) and A3[0, 0] < 0


def test_world_voxel_conversion_inverse():
    v = data.load_brain(2)
    pts = torch.tensor([[0.0, 0.0, 0.0], [10.5, 3.0, 40.0], [79.0, 95.0, 79.0]])
    w = data.voxel_to_world(pts, v.affine)
    assert torch.allclose(data.world_to_voxel(w, v.affine), pts.double())
    assert torch.allclose(w[0], v.affine[:3, 3])
    with pytest.raises(ValueError, match="world_to_voxel: points must have 3 coordinates"):
        data.world_to_voxel(torch.zeros(4, 2), v.affine)


@pytest.mark.parametrize("units", ["mm", "voxel"])
def test_dvf_round_trip(tmp_path, units):
    v = data.load_brain(4)
    g = torch.Generator().manual_seed(0)
    dvf = torch.randn(1, 3, *v.shape, generator=g)
    p = data.save_dvf(tmp_path / "dvf.nii.gz", dvf, v.affine, units=units)
    img = nib.load(str(p))
    assert img.shape == (*v.shape, 1, 3) and img.header.get_intent()[0] == "vector"
    if units == "mm":  # stored as world millimetres: voxel displacement times the 4 mm spacing
        stored = np.asarray(img.dataobj)[..., 0, :]
        np.testing.assert_allclose(stored, 4.0 * dvf[0].permute(1, 2, 3, 0).numpy(), rtol=1e-5, atol=1e-5)
    back, A = data.load_dvf(p)
    assert torch.allclose(back, dvf, atol=1e-5) and torch.equal(A, v.affine)


def test_dvf_round_trip_2d_and_itk(tmp_path):
    s = data.brain_slice("axial", resolution=4)
    dvf = torch.randn(1, 2, *s.shape, generator=torch.Generator().manual_seed(1))
    p = data.save_dvf(tmp_path / "d2.nii.gz", dvf, s.affine)
    back, _ = data.load_dvf(p, ndim=2, canonical=False)
    assert torch.allclose(back, dvf, atol=1e-5)
    q = data.save_dvf(tmp_path / "itk.nii.gz", data.synthetic_subject(data.load_brain(4), seed=0)["dvf"],
                      data.load_brain(4).affine, itk=True)
    ras = data.save_dvf(tmp_path / "ras.nii.gz", data.synthetic_subject(data.load_brain(4), seed=0)["dvf"],
                        data.load_brain(4).affine)
    a, b = np.asarray(nib.load(str(q)).dataobj), np.asarray(nib.load(str(ras)).dataobj)
    np.testing.assert_allclose(a[..., :2], -b[..., :2])
    np.testing.assert_allclose(a[..., 2], b[..., 2])
    assert torch.allclose(data.load_dvf(q)[0], data.load_dvf(ras)[0], atol=1e-5)


# ----------------------------------------------------------------------------- clear errors
def test_missing_file(tmp_path):
    path = tmp_path / "nope.nii.gz"
    with pytest.raises(FileNotFoundError, match=r"load_nifti: no such file: '.*nope\.nii\.gz'"):
        data.load_nifti(path)


def test_truncated_file(tmp_path):
    full = data.save_nifti(tmp_path / "full.nii.gz", torch.rand(1, 1, 30, 30, 30))
    raw = full.read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"load_nifti: '.*truncated\.nii\.gz' is truncated or corrupt"):
        data.load_nifti(bad)
    tiny = tmp_path / "tiny.nii.gz"
    tiny.write_bytes(raw[:100])
    with pytest.raises(ValueError, match=r"load_nifti: '.*tiny\.nii\.gz' is not a readable NIfTI file"):
        data.load_nifti(tiny)
    junk = tmp_path / "junk.nii"
    junk.write_bytes(gzip.compress(b"not an image") * 50)
    with pytest.raises(ValueError, match=r"junk\.nii' is not a readable NIfTI file"):
        data.load_nifti(junk)


def test_4d_where_3d_expected(tmp_path):
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 5), np.float32), np.eye(4)), str(path))
    with pytest.raises(ValueError, match=r"load_nifti: '.*series\.nii\.gz' holds a 4D image of shape \(8, 8, 8, 5\); "
                                         r"expected a 3D image"):
        data.load_nifti(path)
    ok = tmp_path / "single.nii.gz"  # a trailing axis of length 1 is fine
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 1), np.float32), np.eye(4)), str(ok))
    assert data.load_nifti(ok)[0].shape == (1, 1, 8, 8, 8)


def test_unsupported_voxel_types(tmp_path):
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.complex64), np.eye(4)), str(path))
    with pytest.raises(TypeError, match=r"load_nifti: '.*complex\.nii\.gz' holds complex voxels"):
        data.load_nifti(path)
    rgb = tmp_path / "rgb.nii.gz"
    arr = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(rgb))
    with pytest.raises(TypeError, match=r"load_nifti: '.*rgb\.nii\.gz' holds voxels of type .* not supported"):
        data.load_nifti(rgb)


def test_other_bad_inputs(tmp_path):
    p = data.save_nifti(tmp_path / "float.nii.gz", torch.rand(1, 1, 6, 6, 6))
    with pytest.raises(ValueError, match="load_nifti: .* holds non-integer values; labels=True"):
        data.load_nifti(p, labels=True)
    with pytest.raises(ValueError, match="load_dvf: .* expected a displacement field"):
        data.load_dvf(p)
    with pytest.raises(ValueError, match="save_nifti: affine must be a finite 4 x 4 matrix"):
        data.save_nifti(tmp_path / "x.nii.gz", torch.rand(6, 6, 6), affine=torch.eye(3))
    with pytest.raises(ValueError, match="save_nifti: tensor must hold one image"):
        data.save_nifti(tmp_path / "x.nii.gz", torch.rand(2, 1, 6, 6, 6))
    with pytest.raises(ValueError, match="save_dvf: dvf must have 3 channels"):
        data.save_dvf(tmp_path / "d.nii.gz", torch.rand(1, 2, 6, 6, 6))
