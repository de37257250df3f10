"""regedu.learning.pretrained: the shipped weights load offline, are checked (checksum, shapes), and register
held-out pairs better than the identity."""

import json
import shutil
import socket
import urllib.request

import pytest
import torch

import regedu
from regedu import learning as L
from regedu.data import PairDataset, brain_slice
from regedu.learning import pretrained

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "unsupervised-2d"


def test_shipped_weights_are_listed_small_and_match_their_checksum():
    assert NAME in pretrained.available()
    entry = pretrained.info(NAME)
    path = pretrained.WEIGHTS_DIR / entry["file"]
    assert path.is_file() and path.stat().st_size < 5_000_000  # a few MB at most
    assert pretrained.sha256(path) == entry["sha256"] and len(entry["sha256"]) == 64
    for key in ("class", "config", "data", "command", "result"):
        assert key in entry, key
    assert entry["command"].startswith("python scripts/train_weights.py")


def test_load_works_offline_and_rebuilds_the_manifest_model(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("pretrained.load must not touch the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    net = pretrained.load(NAME)
    entry = pretrained.info(NAME)
    assert type(net).__name__ == entry["class"] and net.config == entry["config"]
    assert not net.training and net.pretrained["sha256"] == entry["sha256"]
    state = torch.load(pretrained.WEIGHTS_DIR / entry["file"], weights_only=True)
    for key, value in net.state_dict().items():
        assert value.shape == state[key].shape and torch.equal(value, state[key]), key


def test_pretrained_network_registers_held_out_pairs():
    net = pretrained.load(NAME)
    pairs = PairDataset(brain_slice(size=64), mode="eval", size=4)
    scores = L.evaluate(net, pairs, "unsupervised", batch_size=4)
    ident = L.evaluate(L.IdentityNet(), pairs, "unsupervised", batch_size=4)
    assert scores["dice"] > ident["dice"] + 0.12, (scores["dice"], ident["dice"])
    assert scores["epe"] < 0.6 * ident["epe"]
    assert scores["folding"] == 0.0
    # the manifest's recorded result (16 pairs) is what this network gives
    recorded = pretrained.info(NAME)["result"]
    full = L.evaluate(net, PairDataset(brain_slice(size=64), mode="eval", size=recorded["eval_pairs"]), "unsupervised", batch_size=8)
    assert full["dice"] == pytest.approx(recorded["dice"], abs=2e-3)


@pytest.fixture
def copy(tmp_path):
    """The shipped weights and manifest, copied to a folder the test may damage."""
    for name in ("manifest.json", pretrained.info(NAME)["file"]):
        shutil.copy(pretrained.WEIGHTS_DIR / name, tmp_path / name)
    return tmp_path


def test_a_damaged_file_is_refused(copy):
    path = copy / pretrained.info(NAME)["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"pretrained: the checksum of .* does not match the manifest .* damaged or was replaced"):
        pretrained.load(NAME, manifest=copy / "manifest.json")
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"pretrained: the weights of 'unsupervised-2d' are missing .*scripts/train_weights.py"):
        pretrained.load(NAME, manifest=copy / "manifest.json")


def test_weights_that_do_not_fit_the_model_are_refused(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"][NAME]["config"]["features"] = [8, 16, 16, 16]  # a narrower network than the weights
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"pretrained: weight 'unet.inc.0.weight' of 'unsupervised-2d' has shape \(16, 2, 3, 3\), "
                                         r"the model RegistrationNet expects \(8, 2, 3, 3\)"):
        pretrained.load(NAME, manifest=copy / "manifest.json")
    manifest["models"][NAME]["config"]["features"] = [16, 32, 32]  # one level fewer
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"do not fit a RegistrationNet.*unexpected \['unet.down.2"):
        pretrained.load(NAME, manifest=copy / "manifest.json")


def test_unknown_names_and_bad_manifests(tmp_path):
    with pytest.raises(ValueError, match=r"pretrained: name must be one of .*'unsupervised-2d'.* got 'vxm-9000'"):
        pretrained.load("vxm-9000")
    with pytest.raises(FileNotFoundError, match=r"pretrained: no weights manifest"):
        pretrained.load(NAME, manifest=tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text('{"models": {}}')
    with pytest.raises(ValueError, match=r"is not a regedu weights manifest"):
        pretrained.available(tmp_path / "manifest.json")


def test_pretrained_network_in_the_library_pipeline():
    # the loaded model is an ordinary RegistrationNet: it trains on (fine-tuning) and its field warps labels
    net = pretrained.load(NAME)
    item = PairDataset(brain_slice(size=64), mode="eval", size=1)[0]
    with torch.no_grad():
        out = net(item["fixed"][None], item["moving"][None])
    warped = regedu.warp_labels(item["moving_labels"][None], out["dvf"])
    assert float(regedu.dice(item["fixed_labels"][None], warped)) > float(regedu.dice(item["fixed_labels"][None], item["moving_labels"][None]))


def test_two_passes_refine_the_registration():
    # the same network applied to its own result (a recursive cascade): the fields are composed
    once, twice = pretrained.load(NAME), pretrained.load(NAME, passes=2)
    assert isinstance(twice, L.RegistrationChain) and len(twice.stages) == 2 and twice.stages[0] is twice.stages[1]
    pairs = PairDataset(brain_slice(size=64), mode="eval", size=6)
    d1 = L.evaluate(once, pairs, "unsupervised", batch_size=6)
    d2 = L.evaluate(twice, pairs, "unsupervised", batch_size=6)
    assert d2["dice"] > d1["dice"] + 0.005 and d2["folding"] == 0.0, (d1["dice"], d2["dice"])
    with pytest.raises(ValueError, match=r"pretrained: passes must be >= 1, got 0"):
        pretrained.load(NAME, passes=0)


def test_the_instructor_modes_3d_weights_load_and_register_a_held_out_volume():
    from regedu.data import load_brain

    name = "unsupervised-3d"
    entry = pretrained.info(name)
    path = pretrained.WEIGHTS_DIR / entry["file"]
    assert path.stat().st_size < 5_000_000 and pretrained.sha256(path) == entry["sha256"]
    net = pretrained.load(name)
    assert net.config["ndim"] == 3 and entry["config"] == net.config
    pairs = PairDataset(load_brain(resolution=2, size=(80, 96, 80)), mode="eval", size=1)
    scores = L.evaluate(net, pairs, "unsupervised", batch_size=1)
    ident = L.evaluate(L.IdentityNet(), pairs, "unsupervised", batch_size=1)
    assert scores["dice"] > ident["dice"] + 0.05, (scores["dice"], ident["dice"])
    assert scores["folding"] < 1e-3
    # the first of the manifest's evaluation pairs is one of the pairs its recorded result averages
    assert abs(scores["dice"] - entry["result"]["dice"]) < 0.1
