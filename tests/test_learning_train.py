"""The one training loop of regedu.learning: every objective lowers its loss, supervised and unsupervised
models beat the identity on held-out pairs, a diffeomorphic model does not fold, histories record
validation metrics per epoch, runs are deterministic, checkpoints round-trip exactly."""

import math

import pytest
import torch

import regedu
from regedu import learning as L
from regedu.data import PairDataset, brain_slice


pytestmark = pytest.mark.usefixtures("one_thread")


FEATURES = (8, 16, 16)


@pytest.fixture(scope="module")
def brain():
    return brain_slice(resolution=4)  # (48, 40) axial slice, 4 mm


@pytest.fixture(scope="module")
def eval_pairs(brain):
    return PairDataset(brain, mode="eval", size=8)


@pytest.fixture(scope="module")
def one_batch(eval_pairs):
    items = [eval_pairs[i] for i in range(4)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.parametrize("objective, kwargs, model", [
    ("supervised", {}, "net"),
    ("supervised", {"masked": False}, "net"),
    ("weak", {"weight": 0.1}, "net"),
    ("weak", {"similarity": "mse", "similarity_weight": 1.0}, "net"),
    ("unsupervised", {"similarity": "lncc", "weight": 0.1}, "net"),
    ("unsupervised", {"similarity": "mse"}, "chain"),
    ("diffeomorphic", {"similarity": "lncc", "weight": 0.1}, "svf"),
    ("cycle", {"similarity": "lncc", "weight": 0.1, "cycle_weight": 0.1}, "net"),
    ("inverse_consistent", {"similarity": "lncc", "weight": 0.1, "inverse_weight": 0.1}, "net"),
])
def test_each_objective_decreases_its_loss(one_batch, objective, kwargs, model):
    net = {"net": lambda: L.RegistrationNet(2, features=FEATURES),
           "svf": lambda: L.RegistrationNet(2, features=FEATURES, diffeomorphic=True),
           "chain": lambda: L.multi_stage(2, scales=(0.5, 1.0), features=FEATURES)}[model]()
    hist = L.train(net, [one_batch], objective, steps=30, lr=3e-3, device="cpu", progress=False, **kwargs)
    losses = hist.train["loss"]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert _mean(losses[-5:]) < 0.9 * _mean(losses[:5]), losses


@pytest.fixture(scope="module")
def identity_metrics(eval_pairs):
    return L.evaluate(L.IdentityNet(), eval_pairs, "supervised", batch_size=8)


def test_supervised_model_beats_identity_on_held_out_pairs(brain, eval_pairs, identity_metrics):
    net = L.RegistrationNet(2, features=FEATURES)
    train_pairs = PairDataset(brain, mode="train", size=100_000, seed=1)
    hist = L.train(net, train_pairs, "supervised", steps=150, lr=3e-3, batch_size=4, device="cpu",
                   val_data=eval_pairs, val_every=75, progress=False)
    assert hist.val["step"] == [75.0, 150.0]
    epe = hist.val["epe"][-1]
    assert epe < 0.85 * identity_metrics["epe"], (epe, identity_metrics["epe"])
    assert hist.val["dice"][-1] > identity_metrics["dice"]


def test_unsupervised_model_improves_dice_over_identity(brain, eval_pairs, identity_metrics):
    net = L.RegistrationNet(2, features=FEATURES)
    train_pairs = PairDataset(brain, mode="train", size=100_000, seed=2)
    L.train(net, train_pairs, "unsupervised", steps=150, lr=3e-3, batch_size=4, device="cpu", progress=False,
            similarity="lncc", weight=0.1)
    m = L.evaluate(net, eval_pairs, "unsupervised", batch_size=8, similarity="lncc")
    assert m["dice"] > identity_metrics["dice"] + 0.03, (m["dice"], identity_metrics["dice"])
    assert m["folding"] < 0.005
    assert m["time_per_pair"] > 0


def test_diffeomorphic_model_does_not_fold(brain, eval_pairs, identity_metrics):
    """Without any smoothness penalty, scaling and squaring of the predicted velocity still gives a
    deformation without folding, and the model aligns the pairs."""
    net = L.RegistrationNet(2, features=FEATURES, diffeomorphic=True)
    train_pairs = PairDataset(brain, mode="train", size=100_000, seed=3)
    L.train(net, train_pairs, "diffeomorphic", steps=100, lr=3e-3, batch_size=4, device="cpu", progress=False,
            similarity="lncc", weight=0.0)
    batch = next(iter(torch.utils.data.DataLoader(eval_pairs, batch_size=8)))
    with torch.no_grad():
        out = net(batch["fixed"], batch["moving"])
    assert out["dvf"].abs().max() > 0.5  # it does deform
    assert float(regedu.folding_fraction(out["dvf"]).max()) == 0.0
    assert float(regedu.jacobian_determinant(out["dvf"]).min()) > 0
    m = L.registration_metrics(out, batch)
    assert m["dice"] > identity_metrics["dice"]


def test_history_records_validation_per_epoch(brain):
    train_pairs = PairDataset(brain, mode="train", size=8, seed=4)
    val = PairDataset(brain, mode="eval", size=4)
    net = L.RegistrationNet(2, features=(4, 8))
    hist = L.train(net, train_pairs, "unsupervised", epochs=3, batch_size=4, device="cpu", val_data=val, progress=False)
    assert hist.steps == 6 and len(hist.train["loss"]) == 6
    assert hist.val["epoch"] == [1.0, 2.0, 3.0] and hist.val["step"] == [2.0, 4.0, 6.0]
    for key in ("dice", "epe", "folding", "mse", "loss", "time_per_pair"):
        assert len(hist.val[key]) == 3 and all(math.isfinite(v) for v in hist.val[key]), key
    assert 0 <= min(hist.val["dice"]) <= max(hist.val["dice"]) <= 1
    assert net.history is hist
    import matplotlib

    matplotlib.use("Agg")
    fig = hist.plot(["loss", "dice"])
    assert [ax.get_title() for ax in fig.axes] == ["loss", "dice"]
    assert len(fig.axes[1].lines) == 1 and list(fig.axes[1].lines[0].get_ydata()) == hist.val["dice"]


def test_training_is_deterministic(brain):
    runs = []
    for _ in range(2):
        regedu.seed_everything(3, deterministic=False)  # the initial weights come from torch's global generator
        net = L.RegistrationNet(2, features=(4, 8))
        data = PairDataset(brain, mode="train", size=1000, seed=5)
        runs.append(L.train(net, data, "unsupervised", steps=4, device="cpu", progress=False, seed=7).train["loss"])
    assert runs[0] == runs[1]


def test_checkpoint_round_trip_is_exact(tmp_path, one_batch, eval_pairs):
    path = tmp_path / "ckpt" / "model.pt"
    net = L.RegistrationNet(2, features=(4, 8), diffeomorphic=True)
    hist = L.train(net, [one_batch], "unsupervised", steps=5, device="cpu", progress=False, val_data=[one_batch],
                   val_every=5, checkpoint=path, similarity="ncc", weight=0.3)
    assert path.is_file()
    ck = L.load_checkpoint(path)  # rebuilt from the stored class name and config
    assert isinstance(ck.model, L.RegistrationNet) and ck.model.diffeomorphic
    for (k, a), (k2, b) in zip(net.state_dict().items(), ck.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert ck.history.to_dict() == hist.to_dict()
    assert ck.config["objective"] == "Unsupervised" and ck.config["objective_config"]["similarity"] == "ncc"
    assert ck.config["steps"] == 5 and isinstance(ck.optimizer, torch.optim.Adam)
    net.eval(), ck.model.eval()
    with torch.no_grad():
        assert torch.equal(net(one_batch["fixed"], one_batch["moving"])["dvf"],
                           ck.model(one_batch["fixed"], one_batch["moving"])["dvf"])
    # continuing from the checkpoint is the same as continuing the original run (history keeps its optimizer)
    assert hist.optimizer is not None and ck.history.optimizer is ck.optimizer
    h1 = L.train(net, [one_batch], "unsupervised", steps=3, device="cpu", progress=False, history=hist, seed=None,
                 similarity="ncc", weight=0.3)
    h2 = L.train(ck.model, [one_batch], "unsupervised", steps=3, device="cpu", progress=False, history=ck.history,
                 seed=None, similarity="ncc", weight=0.3)
    assert h1.train["step"][-1] == 8 and h1.train["loss"] == h2.train["loss"]
    for a, b in zip(net.parameters(), ck.model.parameters()):
        assert torch.equal(a, b)


def test_3d_training_step_on_a_tiny_volume():
    item = {"fixed": torch.rand(2, 1, 12, 10, 8), "moving": torch.rand(2, 1, 12, 10, 8),
            "dvf": torch.zeros(2, 3, 12, 10, 8),
            "fixed_labels": torch.randint(0, 3, (2, 1, 12, 10, 8)), "moving_labels": torch.randint(0, 3, (2, 1, 12, 10, 8))}
    for obj, model in (("supervised", L.RegistrationNet(3, features=(4, 8))),
                       ("weak", L.RegistrationNet(3, features=(4, 8))),
                       ("cycle", L.RegistrationNet(3, features=(4, 8), diffeomorphic=True)),
                       ("unsupervised", L.multi_stage(3, scales=(1.0,), features=(4, 8)))):
        hist = L.train(model, [item], obj, steps=2, device="cpu", progress=False, val_data=[item])
        assert len(hist.train["loss"]) == 2 and "folding" in hist.val


def test_objective_errors(one_batch):
    net = L.RegistrationNet(2, features=(4, 8))
    with pytest.raises(ValueError, match=r"train: give steps or epochs, not both"):
        L.train(net, [one_batch], steps=2, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"get_objective: objective must be one of 'supervised', .* got 'magic'"):
        L.train(net, [one_batch], "magic", steps=1, progress=False)
    with pytest.raises(ValueError, match=r"Diffeomorphic: the model output has no 'velocity'"):
        L.train(net, [one_batch], "diffeomorphic", steps=1, device="cpu", progress=False)
    no_dvf = {k: v for k, v in one_batch.items() if k != "dvf"}
    with pytest.raises(KeyError, match=r"Supervised: the batch has no ground-truth 'dvf'"):
        L.train(net, [no_dvf], "supervised", steps=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"train: data has no length, so give steps"):
        L.train(net, iter([one_batch]), epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"train: data must be a torch Dataset, a DataLoader or an iterable of batches, got int"):
        L.train(net, 3, steps=1, progress=False)
    with pytest.raises(FileNotFoundError, match=r"load_checkpoint: no checkpoint file"):
        L.load_checkpoint("/nonexistent/model.pt")


class _Recording(torch.utils.data.Dataset):
    """A dataset that remembers which items were read (every item is a tiny registration pair)."""

    def __init__(self, n):
        self.n, self.read = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.read.append(int(i))
        g = torch.Generator().manual_seed(int(i))
        return {"fixed": torch.rand(1, 12, 12, generator=g), "moving": torch.rand(1, 12, 12, generator=g)}


def test_continued_training_reads_new_items(tmp_path):
    # issue 16.4: train(..., history=h) continues in the data instead of replaying its first items
    data = _Recording(64)
    net = L.RegistrationNet(2, features=(4,))
    kw = dict(steps=3, batch_size=4, device="cpu", progress=False, similarity="mse")
    h = L.train(net, data, "unsupervised", checkpoint=tmp_path / "a.pt", **kw)
    first = list(data.read)
    data.read.clear()
    L.train(net, data, "unsupervised", history=h, **kw)  # the default seed=0 as in a notebook cell run twice
    second = list(data.read)
    assert len(first) == len(second) == 12 and not set(first) & set(second), (first, second)
    assert h.data["batches"] == 6 and h.steps == 6
    # the same continuation from the checkpoint (a fresh session) reads the same new items
    ck = L.load_checkpoint(tmp_path / "a.pt")
    assert ck.history.data == {"seed": 0, "batches": 3}
    data.read.clear()
    L.train(ck.model, data, "unsupervised", history=ck.history, **kw)
    assert data.read == second
    # a new run with the same seed starts again from the same items (deterministic)
    data.read.clear()
    L.train(L.RegistrationNet(2, features=(4,)), data, "unsupervised", **kw)
    assert data.read == first
    # over an epoch boundary: every item once per epoch, a new order in the next epoch
    data.read.clear()
    L.train(L.RegistrationNet(2, features=(4,)), data, "unsupervised", steps=32, batch_size=4, device="cpu", progress=False,
            similarity="mse", seed=5)
    assert sorted(data.read[:64]) == list(range(64)) and sorted(data.read[64:]) == list(range(64))
    assert data.read[:64] != data.read[64:]


def test_continued_training_on_huge_and_on_the_fly_data(brain):
    import importlib

    max_shuffle = importlib.import_module("regedu.learning.train").MAX_SHUFFLE
    big = _Recording(max_shuffle + 1)  # read in order (no permutation of a huge dataset)
    net = L.RegistrationNet(2, features=(4,))
    kw = dict(steps=2, batch_size=3, device="cpu", progress=False, similarity="mse")
    h = L.train(net, big, "unsupervised", **kw)
    L.train(net, big, "unsupervised", history=h, **kw)
    assert big.read == list(range(12))

    # train-mode PairDataset (fresh random pairs): the second call's pairs differ from the first call's
    class Spy(torch.utils.data.Dataset):
        def __init__(self):
            self.pairs, self.fixed = PairDataset(brain, mode="train", size=1000, seed=9), []

        def __len__(self):
            return len(self.pairs)

        def __getitem__(self, i):
            item = self.pairs[i]
            self.fixed.append(item["fixed"])
            return item

    spy = Spy()
    h = L.train(net, spy, "unsupervised", steps=1, batch_size=2, device="cpu", progress=False)
    L.train(net, spy, "unsupervised", steps=1, batch_size=2, device="cpu", progress=False, history=h)
    f = spy.fixed
    assert len(f) == 4 and not any(torch.equal(f[i], f[j]) for i in (0, 1) for j in (2, 3))


def test_callback_and_snapshots_as_in_register(eval_pairs):
    from regedu.widgets import RegistrationPlayback

    net = L.RegistrationNet(2, features=(4, 8))
    calls = []

    def callback(epoch, step, loss, model):
        calls.append((epoch, step, loss, model))
        return step == 5  # stop early

    data = [eval_pairs[i] for i in range(2)]
    batches = [{k: torch.stack([d[k] for d in data]) for k in data[0]}] * 2  # 2 batches per epoch
    h = L.train(net, batches, "unsupervised", steps=8, device="cpu", progress=False, callback=callback,
                snapshot_every=2, val_data=eval_pairs, val_batch_size=8, lr=3e-3)
    assert [c[:2] for c in calls] == [(0, 1), (0, 2), (1, 3), (1, 4), (2, 5)] and all(c[3] is net for c in calls)
    assert [c[2] for c in calls] == h.train["loss"] and h.stopped_early and h.steps == 5
    assert h.val["step"][-1] == 5  # validated where it stopped
    # snapshots: before the first step and every 2 steps, of the first validation pair, on the CPU
    assert [s[0] for s in h.snapshots] == [0, 2, 4]
    step, moved, dvf = h.snapshots[-1]
    assert moved.shape == (1, 1, 48, 40) and dvf.shape == (1, 2, 48, 40) and dvf.device.type == "cpu"
    assert not torch.equal(h.snapshots[0][2], h.snapshots[-1][2])  # the prediction changed while training
    # continuing appends snapshots (no second step-0 snapshot); an explicit pair (a dataset item) is used as given
    pair = eval_pairs[3]
    L.train(net, batches, "unsupervised", steps=2, device="cpu", progress=False, history=h, snapshot_every=1,
            snapshot_pair=(pair["fixed"], pair["moving"]))
    assert [s[0] for s in h.snapshots] == [0, 2, 4, 6, 7]
    with torch.no_grad():
        out = net.eval()(pair["fixed"][None], pair["moving"][None])
    assert torch.allclose(h.snapshots[-1][2], out["dvf"], atol=1e-6)
    playback = RegistrationPlayback(pair["fixed"][None], h.snapshots, loss=h.train["loss"], loss_steps=h.train["step"],
                                    moving=pair["moving"][None], xlabel="training step")
    assert playback is not None
    with pytest.raises(ValueError, match=r"train: snapshot_every needs a pair to record"):
        L.train(net, batches, steps=1, device="cpu", progress=False, snapshot_every=1)
    with pytest.raises(TypeError, match=r"train: callback must be callable"):
        L.train(net, batches, steps=1, device="cpu", progress=False, callback=3)


class _Translate(torch.nn.Module):
    """A toy 'network': a constant translation ``t``, with the sign of mean(fixed) - mean(moving) if ``signed``."""

    def __init__(self, t, signed=False):
        super().__init__()
        self.t, self.signed = torch.nn.Parameter(torch.tensor(t)), signed

    def forward(self, fixed, moving):
        sign = torch.sign(fixed.mean() - moving.mean()) if self.signed else 1.0
        dvf = (sign * self.t).reshape(1, 2, 1, 1).expand(fixed.shape[0], 2, *fixed.shape[2:])
        return {"dvf": dvf, "moved": regedu.warp(moving, dvf), "regularise": [dvf]}


def test_cycle_is_cyclemorph_and_inverse_consistency_is_the_round_trip_displacement(one_batch):
    # Kim et al.'s cycle compares images: the deformed images registered again must give back the originals;
    # inverse consistency compares displacements: phi_u o phi_w = Id
    batch = {k: one_batch[k][:2] for k in ("fixed", "moving")}
    model = _Translate([1.5, -2.0], signed=True)  # +t one way, -t the other: exactly inverse consistent
    cyc = L.get_objective("cycle", similarity="mse", weight=0.0, cycle_weight=1.0, identity_weight=1.0)
    out = cyc.forward(model, batch)
    loss, logs = cyc(out, batch)
    f, m = batch["fixed"], batch["moving"]
    with torch.no_grad():
        fwd, bwd = model(f, m), model(m, f)
        back_m = model(bwd["moved"], fwd["moved"])["moved"]  # M^ registered onto F^ (which looks like M)
        back_f = model(fwd["moved"], bwd["moved"])["moved"]
        expected_cycle = (back_m - m).abs().mean() + (back_f - f).abs().mean()
        expected_identity = regedu.mse(f, model(f, f)["moved"]) + regedu.mse(m, model(m, m)["moved"])
    assert logs["cycle"] == pytest.approx(float(expected_cycle), rel=1e-5) and logs["cycle"] > 0.01
    assert logs["identity"] == pytest.approx(float(expected_identity), rel=1e-5)
    assert logs["similarity"] == pytest.approx(float(regedu.mse(f, fwd["moved"]) + regedu.mse(m, bwd["moved"])), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(logs["similarity"] + logs["cycle"] + logs["identity"], rel=1e-5)
    ic = L.get_objective("inverse_consistent", similarity="mse", weight=0.0, inverse_weight=1.0)
    assert ic(ic.forward(model, batch), batch)[1]["inverse_consistency"] < 1e-10  # u o w = 0: nothing to penalise
    # the other way round: a constant translation both ways on uniform images. The images do not change,
    # so the image cycle sees nothing; the round trip moves every point by 2t
    flat = {"fixed": torch.full((1, 1, 12, 12), 0.5), "moving": torch.full((1, 1, 12, 12), 0.5)}
    model = _Translate([1.5, -2.0])
    assert cyc(cyc.forward(model, flat), flat)[1]["cycle"] < 1e-6
    assert ic(ic.forward(model, flat), flat)[1]["inverse_consistency"] == pytest.approx(4 * (1.5**2 + 2.0**2), rel=1e-4)
    # weights of 0 skip their terms and forward passes
    light = L.get_objective("cycle", cycle_weight=0, identity_weight=0)
    assert set(light.forward(model, flat)) == {"forward", "backward"}
    assert "cycle" not in light(light.forward(model, flat), flat)[1]
