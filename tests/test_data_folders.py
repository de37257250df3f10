"""Reading an instructor's own folders of NIfTI scans (Learn2Reg and one-folder-per-subject layouts) and the
preprocessing steps, on small fixture folders written by the tests, including broken folders."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from regedu import data
from regedu.data import folders, preprocess
from regedu.data.volume import Volume


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("REGEDU_CACHE", str(tmp_path / "cache"))


A = np.diag([2.0, 2.0, 3.0, 1.0])


def _scan(seed, shape=(10, 12, 8)):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 1, *shape, generator=g)
    lab = (img > 0.5).long() + (img > 0.8).long()
    return img, lab


def _learn2reg(root, n=3, with_json=False, keypoints=True):
    for d in ("imagesTr", "labelsTr", "keypointsTr"):
        (root / d).mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        name = f"TASK_{i + 1:04d}_0000"
        img, lab = _scan(i)
        data.save_nifti(root / "imagesTr" / f"{name}.nii.gz", img, A)
        data.save_nifti(root / "labelsTr" / f"{name}.nii.gz", lab, A)
        if keypoints:
            (root / "keypointsTr" / f"{name}.csv").write_text("1.0,2.0,3.0\n4.5,5.0,6.0\n")
        entries.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    if with_json:
        (root / "TASK_dataset.json").write_text(json.dumps({
            "name": "TASK", "training": entries,
            "registration_val": [{"fixed": entries[0]["image"], "moving": entries[1]["image"]}]}))
    return root


def _subjects(root, n=2):
    for i in range(n):
        sub = root / f"sub{i:02d}"
        sub.mkdir(parents=True)
        img, lab = _scan(10 + i)
        data.save_nifti(sub / "t1.nii.gz", img, A)
        if i == 0:
            data.save_nifti(sub / "labels.nii.gz", lab, A)
            (sub / "landmarks.csv").write_text("x,y,z\n1,1,1\n")
    (root / "README.md").write_text("my data")
    return root


# ----------------------------------------------------------------------------- Learn2Reg layout
def test_learn2reg_folder_without_json(tmp_path):
    f = data.read_folder(_learn2reg(tmp_path))
    assert f.layout == "learn2reg" and f.names == ["TASK_0001_0000", "TASK_0002_0000", "TASK_0003_0000"]
    v = f["TASK_0002_0000"].load()
    img, lab = _scan(1)
    assert torch.equal(v.image, img) and torch.equal(v.labels, lab)
    assert v.spacing == (2.0, 2.0, 3.0) and torch.equal(v.points, torch.tensor([[1.0, 2, 3], [4.5, 5, 6]], dtype=torch.float64))
    assert "3 scans, 3 with labels, 3 with landmarks" in repr(f)


def test_learn2reg_folder_with_dataset_json_and_pairs(tmp_path):
    f = data.read_folder(_learn2reg(tmp_path, with_json=True, keypoints=False))
    assert len(f) == 3 and f.pairs == [("TASK_0001_0000", "TASK_0002_0000")] and f.info["name"] == "TASK"
    assert f[0].label is not None and f[0].keypoints is None


def test_json_listing_a_missing_file(tmp_path):
    _learn2reg(tmp_path, with_json=True)
    (tmp_path / "labelsTr" / "TASK_0002_0000.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"TASK_dataset.json lists label './labelsTr/TASK_0002_0000.nii.gz', which does not exist"):
        data.read_folder(tmp_path)


def test_missing_label_for_an_image(tmp_path):
    _learn2reg(tmp_path)
    (tmp_path / "labelsTr" / "TASK_0003_0000.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"image '.*imagesTr/TASK_0003_0000.nii.gz' has no label map \(expected labelsTr/TASK_0003_0000.nii.gz\)"):
        data.read_folder(tmp_path)


def test_label_without_image(tmp_path):
    _learn2reg(tmp_path)
    (tmp_path / "imagesTr" / "TASK_0001_0000.nii.gz").unlink()
    with pytest.raises(ValueError, match="label map '.*labelsTr/TASK_0001_0000.nii.gz' has no image"):
        data.read_folder(tmp_path)


def test_mismatched_label_shape(tmp_path):
    _learn2reg(tmp_path)
    data.save_nifti(tmp_path / "labelsTr" / "TASK_0002_0000.nii.gz", torch.zeros(1, 1, 10, 12, 9, dtype=torch.long), A,
                    overwrite=True)
    with pytest.raises(ValueError, match=r"label map '.*TASK_0002_0000.nii.gz' has shape \(10, 12, 9\), but its image "
                                         r"'.*imagesTr/TASK_0002_0000.nii.gz' has \(10, 12, 8\)"):
        data.read_folder(tmp_path)


def test_mismatched_label_affine(tmp_path):
    _learn2reg(tmp_path)
    data.save_nifti(tmp_path / "labelsTr" / "TASK_0002_0000.nii.gz", _scan(1)[1], np.eye(4), overwrite=True)
    with pytest.raises(ValueError, match="different affines"):
        data.read_folder(tmp_path)


@pytest.mark.parametrize("name", ["TASK_0009_0000.mha", "scan.png"])
def test_non_nifti_file_in_images(tmp_path, name):
    _learn2reg(tmp_path)
    (tmp_path / "imagesTr" / name).write_bytes(b"\x00" * 10)
    (tmp_path / "imagesTr" / "README.txt").write_text("ignored")
    with pytest.raises(ValueError, match=f"'.*imagesTr/{name}' in imagesTr/ is not a NIfTI file"):
        data.read_folder(tmp_path)


def test_corrupt_nifti(tmp_path):
    _learn2reg(tmp_path)
    (tmp_path / "imagesTr" / "TASK_0002_0000.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(ValueError, match="'.*TASK_0002_0000.nii.gz' is not a readable NIfTI file"):
        data.read_folder(tmp_path)


# ----------------------------------------------------------------------------- subject layout
def test_subject_folders(tmp_path):
    f = data.read_folder(_subjects(tmp_path))
    assert f.layout == "subjects" and f.names == ["sub00", "sub01"]
    assert f["sub00"].label.name == "labels.nii.gz" and f["sub01"].label is None
    v0, v1 = f[0].load(), f[1].load()
    assert torch.equal(v0.labels, _scan(10)[1]) and int(v1.labels.abs().sum()) == 0
    assert v0.points.tolist() == [[1.0, 1.0, 1.0]] and v1.points is None


def test_subject_folder_errors(tmp_path):
    _subjects(tmp_path)
    data.save_nifti(tmp_path / "sub01" / "flair.nii.gz", _scan(3)[0], A)
    with pytest.raises(ValueError, match=r"subject folder '.*sub01' holds 2 images \(flair.nii.gz, t1.nii.gz\)"):
        data.read_folder(tmp_path)
    (tmp_path / "sub01" / "flair.nii.gz").unlink()
    (tmp_path / "sub01" / "scan.dcm").write_bytes(b"DICM")
    with pytest.raises(ValueError, match="'.*sub01/scan.dcm' in subject folder 'sub01' is not a NIfTI file"):
        data.read_folder(tmp_path)


def test_read_folder_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="read_folder: no such folder"):
        data.read_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="layout must be"):
        data.read_folder(tmp_path, layout="bids")
    with pytest.raises(ValueError, match="no subject folders with a NIfTI image"):
        data.read_folder(tmp_path)


def test_landmark_files(tmp_path):
    p = tmp_path / "k.csv"
    p.write_text("1,2\n3,4,5\n")
    with pytest.raises(ValueError, match="every line of .*k.csv' must hold 2 or 3 coordinates"):
        folders.read_landmarks(p)
    p.write_text("1,2,3\nfoo,1,2\n")
    with pytest.raises(ValueError, match="line 2 of .*k.csv' is not a list of numbers"):
        folders.read_landmarks(p)


# ----------------------------------------------------------------------------- preprocessing steps
def _las_volume(tmp_path):
    """A LAS+ file (x flipped) with a bright voxel at a landmark."""
    a = np.zeros((9, 10, 11), np.float32)
    a[2, 3, 4] = 1.0
    Af = np.diag([-2.0, 2.0, 2.0, 1.0])
    Af[0, 3] = 16.0
    nib.save(nib.Nifti1Image(a, Af), str(tmp_path / "las.nii.gz"))
    (tmp_path / "las.csv").write_text("2,3,4\n")
    return folders.Scan("las", tmp_path / "las.nii.gz", keypoints=tmp_path / "las.csv")


def test_reorient_matches_nibabel_and_moves_landmarks(tmp_path):
    scan = _las_volume(tmp_path)
    raw = scan.load(canonical=False)
    v = preprocess.reorient(raw)
    ref = nib.as_closest_canonical(nib.load(str(scan.image)))
    assert np.array_equal(v.image[0, 0].numpy(), ref.get_fdata().astype(np.float32))
    assert np.allclose(v.affine.numpy(), ref.affine)
    i, j, k = (int(round(c)) for c in v.points[0].tolist())
    assert float(v.image[0, 0, i, j, k]) == 1.0
    assert torch.allclose(data.voxel_to_world(v.points, v.affine), data.voxel_to_world(raw.points, raw.affine))
    assert torch.equal(scan.load().image, v.image)


def test_resample_keeps_world_positions():
    vol = data.load_brain(4)
    vol = Volume(vol.image, vol.labels, vol.affine, vol.spacing, points=torch.tensor([[10.0, 12.0, 9.0]], dtype=torch.float64))
    out = preprocess.resample(vol, (2.0, 4.0, 8.0))
    assert out.spacing == pytest.approx((2.0, 4.0, 8.0))
    assert out.shape == (79, 48, 21)  # (S - 1) * old / new + 1, rounded
    assert torch.allclose(data.voxel_to_world(out.points, out.affine), data.voxel_to_world(vol.points, vol.affine))
    back = preprocess.resample(preprocess.resample(vol, (2.0, 4.0, 4.0)), 4.0)
    assert back.shape == vol.shape and float((back.image - vol.image).abs().mean()) < 0.02
    with pytest.raises(ValueError, match="resample: spacing must be one positive number or 3"):
        preprocess.resample(vol, (1.0, 1.0))


def test_resample_to_the_same_grid_is_the_identity_and_crop_pad():
    vol = data.load_brain(4)
    same = preprocess.resample_to(vol, vol)
    assert torch.allclose(same.image, vol.image, atol=1e-5) and torch.equal(same.labels, vol.labels)
    pts = Volume(vol.image, vol.labels, vol.affine, vol.spacing, points=torch.tensor([[20.0, 24.0, 20.0]], dtype=torch.float64))
    c = preprocess.crop_or_pad(pts, (32, 56, 40))
    assert c.shape == (32, 56, 40) and c.spacing == vol.spacing
    assert torch.allclose(data.voxel_to_world(c.points, c.affine), data.voxel_to_world(pts.points, pts.affine))
    fg = preprocess.crop_or_pad(pts, (24, 24, 24), centre="foreground")
    com = (vol.labels[0, 0] > 0).nonzero().double().mean(0)
    assert fg.shape == (24, 24, 24) and torch.allclose(fg.points[0], pts.points[0] - com + 11.5, atol=0.5)
    assert torch.allclose(data.voxel_to_world(fg.points, fg.affine), data.voxel_to_world(pts.points, pts.affine))
    o = [int(v) for v in (pts.points[0] - fg.points[0]).round()]  # the crop's first voxel in the input
    assert torch.equal(fg.image[0, 0], vol.image[0, 0, o[0]:o[0] + 24, o[1]:o[1] + 24, o[2]:o[2] + 24])


def test_normalise():
    vol = data.load_brain(4)
    z = preprocess.normalise(vol)
    inside = z.image[vol.labels > 0].double()
    assert abs(float(inside.mean())) < 1e-5 and abs(float(inside.std()) - 1) < 1e-4
    m = preprocess.normalise(vol, (2, 98), method="minmax")
    assert float(m.image.min()) == 0.0 and float(m.image.max()) == 1.0
    with pytest.raises(ValueError, match="normalise: percentiles must satisfy"):
        preprocess.normalise(vol, (50, 10))


def test_align_to_recovers_a_known_shift_and_pipeline_log():
    from regedu.warping import affine_warp
    tpl = data.brain_slice("axial", resolution=4)
    T = torch.eye(3, dtype=torch.float64)
    T[0, 2], T[1, 2] = 2.0, -3.0  # moving(x) = template(x + t)
    moving = Volume(affine_warp(tpl.image, T.float()), tpl.labels, tpl.affine, tpl.spacing)
    out = preprocess.align_to(moving, tpl, similarity="mse", iterations=150)
    assert torch.allclose(out.alignment[:2, 2], torch.tensor([-2.0, 3.0], dtype=torch.float64), atol=0.3)
    pipe = preprocess.Pipeline([("minmax", lambda v: preprocess.normalise(v, method="minmax")),
                                ("2 mm", lambda v: preprocess.resample(v, 2.0))])
    res = pipe(tpl)
    assert res.spacing == (2.0, 2.0) and [e["step"] for e in pipe.log] == ["input", "minmax", "2 mm"]
    assert "2 mm" in pipe.describe() and pipe.log[-1]["shape"] == res.shape
