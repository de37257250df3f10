"""regedu.learning on the inputs students actually have, and on bad ones (issue 11).

Networks compute in their own dtype (NumPy's float64, uint8 images, bool masks and half precision
inputs work); degenerate constructor parameters, empty data and misspelt keywords are clear errors
that name the argument, the expectation and what was given."""

import math

import pytest
import torch

from regedu import learning as L
from regedu.learning.objectives import UnknownKeywordError


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(dtype=torch.float32, shape=(16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    f, m = torch.rand(1, 1, *shape, generator=g), torch.rand(1, 1, *shape, generator=g)
    if dtype == torch.bool:
        return f > 0.5, m > 0.5
    if not dtype.is_floating_point:
        return (f * 255).to(dtype), (m * 255).to(dtype)
    return f.to(dtype), m.to(dtype)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return L.RegistrationNet(2, features=(4, 8)).eval()


# --------------------------------------------------------------------------------------------
# dtypes: computed in the network's dtype
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int16, torch.int64, torch.bool])
def test_registration_net_accepts_every_real_dtype(net, dtype):
    f, m = _pair(dtype)
    with torch.no_grad():
        out = net(f, m)
        ref = net(f.float(), m.float())  # what the network computes: the same images in float32
    assert out["dvf"].dtype == torch.float32 and out["moved"].dtype == torch.float32
    assert torch.isfinite(out["dvf"]).all() and torch.isfinite(out["moved"]).all()
    assert torch.allclose(out["dvf"], ref["dvf"], atol=1e-6) and torch.allclose(out["moved"], ref["moved"], atol=1e-5)


def test_float64_numpy_image_gives_the_float32_result(net):
    import numpy as np

    rng = np.random.default_rng(0)
    f64, m64 = rng.random((1, 1, 16, 16)), rng.random((1, 1, 16, 16))  # NumPy's default dtype
    with torch.no_grad():
        a = net(torch.from_numpy(f64), torch.from_numpy(m64))["dvf"]
        b = net(torch.from_numpy(f64).float(), torch.from_numpy(m64).float())["dvf"]
    assert torch.allclose(a, b, atol=1e-6)


def test_a_float64_network_computes_in_float64():
    torch.manual_seed(0)
    net = L.RegistrationNet(2, features=(4, 8), diffeomorphic=True).double()
    f, m = _pair(torch.float32)
    out = net(f, m)
    assert out["dvf"].dtype == out["moved"].dtype == out["velocity"].dtype == torch.float64


@pytest.mark.parametrize("make", [
    lambda: L.AffineNet(2, features=(4,), hidden=4),
    lambda: L.multi_stage(2, features=(4, 8), scales=(0.5,)),
    lambda: L.UNet(2, in_channels=2, features=(4, 8)),
])
def test_other_networks_accept_integer_and_float64_images(make):
    model = make()
    f, m = _pair(torch.uint8)
    with torch.no_grad():
        if isinstance(model, L.UNet):
            y = model(torch.cat([f, m], 1).double())
            assert y.dtype == torch.float32 and torch.isfinite(y).all()
        else:
            out = model(f, m.double())
            assert out["moved"].dtype == torch.float32 and torch.isfinite(out["dvf"]).all()


def test_classifiers_accept_uint8_digits():
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    for model in (L.CNNClassifier(features=(4, 8)), L.STNClassifier(features=(4,), stn_features=(4,))):
        logits = model(x)
        assert logits.shape == (2, 10) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_training_on_uint8_batches_works():
    f, m = _pair(torch.uint8, shape=(16, 16))
    batch = {"fixed": f.repeat(2, 1, 1, 1), "moving": m.repeat(2, 1, 1, 1)}  # uint8 images, as loaded from a PNG
    h = L.train(L.RegistrationNet(2, features=(4,)), [batch], "unsupervised", steps=2, device="cpu", progress=False,
                similarity="mse")
    assert all(math.isfinite(v) for v in h.train["loss"])


# --------------------------------------------------------------------------------------------
# bad inputs to the networks
# --------------------------------------------------------------------------------------------

def test_nan_image_is_named(net):
    f, m = _pair()
    m[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"RegistrationNet: moving contains 1 NaN and 0 infinite values"):
        net(f, m)


def test_batch_and_channel_mismatch(net):
    f, m = _pair()
    with pytest.raises(ValueError, match=r"RegistrationNet: fixed and moving must have the same batch size"):
        net(f.repeat(2, 1, 1, 1), m.repeat(3, 1, 1, 1))
    with pytest.raises(ValueError, match=r"RegistrationNet: fixed and moving must have 1 channel\(s\) each"):
        net(f.repeat(1, 3, 1, 1), m.repeat(1, 3, 1, 1))


def test_images_on_another_device_than_the_model():
    model = L.RegistrationNet(2, features=(4,)).to("meta")
    f, m = _pair()
    with pytest.raises(ValueError, match=r"RegistrationNet: fixed is on cpu but the model's parameters are on meta"):
        model(f, m)


# --------------------------------------------------------------------------------------------
# degenerate constructor parameters
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, pattern", [
    (lambda: L.RegistrationNet(2, channels=0), r"RegistrationNet: channels must be >= 1, got 0"),
    (lambda: L.RegistrationNet(2, channels=1.5), r"RegistrationNet: channels must be an integer, got 1.5"),
    (lambda: L.RegistrationNet(4), r"RegistrationNet: ndim must be 2 or 3, got 4"),
    (lambda: L.RegistrationNet(2, integration_steps=-1), r"RegistrationNet: integration_steps must be >= 0, got -1"),
    (lambda: L.RegistrationNet(2, scale=0), r"RegistrationNet: scale must be in \(0, 1\], got 0"),
    (lambda: L.RegistrationNet(2, scale=float("nan")), r"RegistrationNet: scale must be in \(0, 1\], got nan"),
    (lambda: L.RegistrationNet(2, features=(8, 0)), r"UNet: features must be at least 1 positive channel counts, got \(8, 0\)"),
    (lambda: L.UNet(2, in_channels=0), r"UNet: in_channels must be >= 1, got 0"),
    (lambda: L.UNet(2, out_channels=-2), r"UNet: out_channels must be >= 1, got -2"),
    (lambda: L.UNet(2, final_init_std=-1.0), r"UNet: final_init_std must be >= 0, got -1"),
    (lambda: L.AffineNet(2, channels=0), r"AffineNet: channels must be >= 1, got 0"),
    (lambda: L.AffineNet(2, pool=0), r"ConvRegressor: pool must be >= 1, got 0"),
    (lambda: L.AffineNet(2, hidden=0), r"ConvRegressor: hidden must be >= 1, got 0"),
    (lambda: L.SpatialTransformer(2, in_channels=0), r"SpatialTransformer: in_channels must be >= 1, got 0"),
    (lambda: L.CNNClassifier(num_classes=0), r"CNNClassifier: num_classes must be >= 1, got 0"),
    (lambda: L.multi_stage(2, affine=False, scales=()), r"multi_stage: give at least one stage"),
    (lambda: L.ConvBlock(2, 1, 4, stride=0), r"ConvBlock: stride must be >= 1, got 0"),
])
def test_degenerate_parameters_are_rejected(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


# --------------------------------------------------------------------------------------------
# train / evaluate
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch():
    f, m = _pair(shape=(16, 16))
    return {"fixed": f.repeat(2, 1, 1, 1), "moving": m.repeat(2, 1, 1, 1)}


def test_train_on_empty_data_is_a_clear_error(batch):
    net = L.RegistrationNet(2, features=(4,))
    with pytest.raises(ValueError, match=r"train: data is empty \(no batches\)"):
        L.train(net, [], steps=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"train: data is an empty dataset \(0 items\)"):
        L.train(net, torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8)), steps=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"train: data yielded no batches \(an empty or exhausted iterator\)"):
        L.train(net, iter([]), steps=1, device="cpu", progress=False)
    # a one-shot iterator runs out after its batch: a clear error, not a bare StopIteration
    with pytest.raises(ValueError, match=r"train: data yielded no batches"):
        L.train(net, iter([batch]), steps=2, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"evaluate: data yielded no batches"):
        L.evaluate(net, [])


def test_misspelt_keyword_names_the_valid_ones(batch):
    net = L.RegistrationNet(2, features=(4,))
    with pytest.raises(TypeError, match=r"train: unknown keyword argument\(s\) 'val_evry' \(did you mean 'val_every'\?\); "
                                        r"train takes .*val_every.*objective 'unsupervised' takes similarity, regulariser, weight, masked"):
        L.train(net, [batch], steps=1, device="cpu", progress=False, val_evry=1)
    with pytest.raises(TypeError, match=r"train: unknown keyword argument\(s\) 'cycle_weight'.*objective 'unsupervised' takes"):
        L.train(net, [batch], "unsupervised", steps=1, device="cpu", progress=False, cycle_weight=1.0)
    with pytest.raises(TypeError, match=r"evaluate: unknown keyword argument\(s\) 'simlarity' \(did you mean 'similarity'\?\)"):
        L.evaluate(net, [batch], simlarity="mse")
    with pytest.raises(UnknownKeywordError, match=r"get_objective: unknown keyword argument\(s\) 'foo' for the objective 'supervised'; it takes masked"):
        L.get_objective("supervised", foo=1)
    assert not hasattr(net, "history")  # the failing calls did not train


@pytest.mark.parametrize("kwargs, pattern", [
    ({"steps": 0}, r"train: steps must be >= 1, got 0"),
    ({"steps": 2.5}, r"train: steps must be an integer, got 2.5"),
    ({"steps": 1, "lr": -1e-3}, r"train: lr must be > 0, got -0.001"),
    ({"steps": 1, "lr": float("nan")}, r"train: lr must be a finite number, got nan"),
    ({"steps": 1, "batch_size": 0}, r"train: batch_size must be >= 1, got 0"),
    ({"steps": 1, "val_every": 0}, r"train: val_every must be >= 1, got 0"),
    ({"steps": 1, "grad_clip": 0}, r"train: grad_clip must be > 0, got 0"),
    ({"steps": 1, "seed": -1}, r"train: seed must be >= 0, got -1"),
    ({"steps": 1, "snapshot_every": -1}, r"train: snapshot_every must be >= 0, got -1"),
    ({"epochs": 0}, r"train: epochs must be >= 1, got 0"),
    ({"steps": 1, "history": {"train": {}}}, r"train: history must be a regedu.learning.History"),
])
def test_train_numeric_and_type_checks(batch, kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        L.train(L.RegistrationNet(2, features=(4,)), [batch], device="cpu", progress=False, **kwargs)


def test_train_rejects_a_non_module_model(batch):
    with pytest.raises(TypeError, match=r"train: model must be a torch.nn.Module, got function"):
        L.train(lambda f, m: None, [batch], steps=1, device="cpu", progress=False)


def test_checkpoint_of_an_unregistered_model_is_a_clear_error(tmp_path):
    class Mine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = {}
            self.w = torch.nn.Parameter(torch.zeros(1))

    path = L.save_checkpoint(tmp_path / "m.pt", Mine())
    with pytest.raises(ValueError, match=r"build_model: unknown model class 'Mine'.*register_model"):
        L.load_checkpoint(path)
    assert isinstance(L.load_checkpoint(path, model=Mine()).model, Mine)  # with the model given it loads
