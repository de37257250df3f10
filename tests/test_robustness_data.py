"""Bad and degenerate inputs to regedu.data (NIfTI I/O, synthetic pairs): a clear error or the exact value.

Each case names the function, the input and what must happen (issue 11, item 4: NIfTI never loses data).
"""

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from regedu import data


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("REGEDU_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- labels survive the round trip
@pytest.mark.parametrize("values, stored", [
    ([0, 1, 255], np.uint8),
    ([-1, 0, 300], np.int16),
    ([0, 70_000], np.int32),
    ([0, 2**31 + 5], np.uint32),             # was stored as int32: 2**31 + 5 became -2147483643
    ([-(2**40), 2**40 + 3], np.int64),
    ([-(2**63), 2**63 - 1], np.int64),
])
def test_label_values_round_trip_exactly(tmp_path, values, stored):
    lab = torch.tensor(values + [0] * (8 - len(values)), dtype=torch.int64).reshape(2, 2, 2)
    p = data.save_nifti(tmp_path / "lab.nii.gz", lab)
    assert nib.load(str(p)).get_data_dtype() == stored
    back, _, _ = data.load_nifti(p, labels=True)
    assert back.dtype == torch.int64 and torch.equal(back[0, 0], lab)


def test_bool_mask_round_trip(tmp_path):
    m = torch.rand(1, 1, 5, 6, 7) > 0.5
    p = data.save_nifti(tmp_path / "mask.nii", m)
    back, _, _ = data.load_nifti(p, labels=True)
    assert torch.equal(back.bool(), m)


def test_float64_and_bfloat16_images_keep_their_values(tmp_path):
    x = torch.rand(1, 1, 4, 5, 6, dtype=torch.float64) + 1e-9
    p = data.save_nifti(tmp_path / "f64.nii.gz", x)
    assert nib.load(str(p)).get_data_dtype() == np.float64
    assert np.array_equal(np.asanyarray(nib.load(str(p)).dataobj), x[0, 0].numpy())
    y = torch.rand(1, 1, 4, 5, 6).to(torch.bfloat16)
    q = data.save_nifti(tmp_path / "bf16.nii.gz", y)
    assert torch.equal(data.load_nifti(q)[0], y.float())


def test_uint64_labels_beyond_int64_are_an_error(tmp_path):
    a = np.array([0, 2**63 + 7], dtype=np.uint64).reshape(2, 1, 1)
    nib.save(nib.Nifti1Image(a, np.eye(4), dtype=np.uint64), str(tmp_path / "u64.nii"))
    with pytest.raises(ValueError, match="u64.nii' holds label values .* beyond int64"):
        data.load_nifti(tmp_path / "u64.nii", labels=True)


# ----------------------------------------------------------------------------- affines
@pytest.mark.parametrize("bad, words", [
    (np.full((4, 4), np.nan), "non-finite"),
    (np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
    (np.array([[1.0, 2, 0, 0], [2, 4, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "singular"),
    (np.eye(3), "finite 4 x 4"),
])
def test_save_rejects_bad_affines(tmp_path, bad, words):
    with pytest.raises(ValueError, match=f"save_nifti: affine .*{words}"):
        data.save_nifti(tmp_path / "x.nii.gz", torch.rand(3, 3, 3), affine=bad)
    assert not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize("bad, words", [(np.vstack([np.full((3, 4), np.nan), [0, 0, 0, 1]]), "non-finite"),
                                        (np.diag([2.0, 2.0, 0.0, 1.0]), "singular")])
def test_load_rejects_bad_affines_naming_the_file(tmp_path, bad, words):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((3, 3, 3))
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    hdr["qform_code"], hdr["sform_code"] = 0, 1  # written field by field: nibabel refuses to save such an affine
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = bad[0], bad[1], bad[2]
    raw = hdr.binaryblock + b"\0" * 4 + np.ones(27, np.float32).tobytes()
    (tmp_path / "bad_affine.nii").write_bytes(raw)
    assert np.allclose(nib.load(str(tmp_path / "bad_affine.nii")).affine, bad, equal_nan=True)
    for canonical in (True, False):
        with pytest.raises(ValueError, match=f"load_nifti: the affine of '.*bad_affine.nii' .*{words}"):
            data.load_nifti(tmp_path / "bad_affine.nii", canonical=canonical)


def test_world_coordinates_need_an_invertible_affine():
    with pytest.raises(ValueError, match="world_to_voxel: affine is singular"):
        data.world_to_voxel(torch.zeros(3), torch.zeros(4, 4).index_fill_(1, torch.tensor([3]), 0) + torch.diag(torch.tensor([1.0, 1, 0, 1])))


# ----------------------------------------------------------------------------- header size vs file size
def _huge_header(path, gz: bool):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((10, 10, 10))
    hdr.set_data_dtype(np.float32)
    raw = bytearray(hdr.binaryblock) + b"\0" * 4 + np.ones(1000, np.float32).tobytes()
    dims = np.frombuffer(raw[40:56], dtype="<i2").copy()
    dims[1:4] = 30000  # the header now claims 30000^3 float32 voxels (100 TB)
    raw[40:56] = dims.tobytes()
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_header_claiming_more_data_than_the_file_holds(tmp_path, name):
    _huge_header(tmp_path / name, name.endswith(".gz"))
    with pytest.raises(ValueError, match=f"'.*{name}' is truncated or its header is corrupt: the header claims shape "
                                         r"\(30000, 30000, 30000\)"):
        data.load_nifti(tmp_path / name)


def test_truncated_uncompressed_file_is_caught_before_reading(tmp_path):
    p = data.save_nifti(tmp_path / "t.nii", torch.rand(1, 1, 8, 8, 8))
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="t.nii' is truncated"):
        data.load_nifti(p)


# ----------------------------------------------------------------------------- spacing and overwrite
@pytest.mark.parametrize("spacing, words", [
    ((1.0, 2.0), "one value per spatial axis .3 for this 3D image., got 2"),
    ((1.0, 2.0, 3.0, 4.0), "got 4"),
    ((1.0, -2.0, 3.0), "positive finite"),
    ((1.0, float("nan"), 3.0), "positive finite"),
])
def test_spacing_of_the_wrong_length_or_sign(tmp_path, spacing, words):
    with pytest.raises(ValueError, match=f"save_nifti: spacing must .*{words}"):
        data.save_nifti(tmp_path / "s.nii.gz", torch.rand(1, 1, 4, 4, 4), spacing=spacing)


def test_spacing_is_used_and_2d_takes_two_values(tmp_path):
    p = data.save_nifti(tmp_path / "s.nii.gz", torch.rand(1, 1, 4, 5), spacing=(0.5, 2.0))
    _, A, sp = data.load_nifti(p, ndim=2)
    assert sp == (0.5, 2.0) and float(A[2, 2]) == 1.0
    with pytest.raises(ValueError, match="either affine or spacing"):
        data.save_nifti(tmp_path / "t.nii.gz", torch.rand(4, 5), affine=np.eye(4), spacing=(1, 1))


def test_saving_over_an_existing_file_needs_overwrite(tmp_path):
    first = torch.rand(1, 1, 4, 4, 4)
    p = data.save_nifti(tmp_path / "a.nii.gz", first)
    with pytest.raises(FileExistsError, match="save_nifti: '.*a.nii.gz' already exists; pass overwrite=True"):
        data.save_nifti(p, torch.zeros(1, 1, 4, 4, 4))
    assert torch.equal(data.load_nifti(p)[0], first)  # untouched
    data.save_nifti(p, torch.zeros(1, 1, 4, 4, 4), overwrite=True)
    assert float(data.load_nifti(p)[0].abs().sum()) == 0.0
    d = data.save_dvf(tmp_path / "d.nii.gz", torch.zeros(1, 3, 4, 4, 4))
    with pytest.raises(FileExistsError, match="save_dvf: .*d.nii.gz' already exists"):
        data.save_dvf(d, torch.ones(1, 3, 4, 4, 4))
    data.save_dvf(d, torch.ones(1, 3, 4, 4, 4), overwrite=True, units="voxel")
    assert torch.allclose(data.load_dvf(d)[0], torch.ones(1, 3, 4, 4, 4))


@pytest.mark.parametrize("name, exc, words", [
    ("x.png", ValueError, "must end in .nii or .nii.gz"),
    ("missing_folder/x.nii", FileNotFoundError, "folder .* does not exist"),
])
def test_save_target_errors(tmp_path, name, exc, words):
    with pytest.raises(exc, match=f"save_nifti: .*{words}"):
        data.save_nifti(tmp_path / name, torch.rand(3, 3, 3))


# ----------------------------------------------------------------------------- synthetic data parameters
@pytest.mark.parametrize("kwargs, words", [
    ({"noise": -1}, "noise must be a finite number >= 0, got -1"),
    ({"gamma": float("nan")}, "gamma must be a finite number >= 0"),
    ({"bias": -0.1}, "bias must be"),
    ({"affine": float("inf")}, "affine must be"),
    ({"max_displacement": -2.0}, "max_displacement must be"),
    ({"max_displacement": float("nan")}, "max_displacement must be"),
    ({"subject_displacement": -1}, "subject_displacement must be"),
    ({"size": 0}, "size .* positive integer"),
    ({"size": 2.5}, "size .* positive integer"),
    ({"seed": -3}, "seed must be an integer >= 0"),
    ({"noise": "0.1"}, "noise must be a finite number"),
])
def test_pair_dataset_rejects_degenerate_parameters(kwargs, words):
    with pytest.raises(ValueError, match=f"PairDataset: {words}"):
        data.PairDataset(resolution=4, **kwargs)


def test_random_intensity_rejects_negative_strengths_and_zero_is_identity():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="random_intensity: noise must be a finite number >= 0, got -0.5"):
        data.random_intensity(x, noise=-0.5)
    assert torch.equal(data.random_intensity(x, gamma=0, bias=0, noise=0), x)


def test_pair_dataset_with_zero_noise_and_displacement_is_the_template():
    ds = data.PairDataset(resolution=4, size=2, max_displacement=0, subject_displacement=0, gamma=0, bias=0, noise=0)
    item = ds[0]
    assert torch.allclose(item["fixed"], item["moving"]) and float(item["dvf"].abs().max()) == 0.0
