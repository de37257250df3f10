"""regedu.learning networks: shapes in 2D and 3D, identity at initialisation, composition in the chain,
the spatial transformer against the library, gradients, and clear errors."""

import pytest
import torch

import regedu
from regedu import learning as L
from regedu import transforms as T


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape", [(24, 20), (13, 17), (8, 12, 10)])
def test_unet_shapes_any_size(shape):
    net = L.UNet(len(shape), in_channels=3, out_channels=5, features=(4, 8, 8))
    y = net(torch.rand(2, 3, *shape))
    assert y.shape == (2, 5, *shape)


@pytest.mark.parametrize("shape", [(32, 24), (12, 16, 10)])
@pytest.mark.parametrize("diffeomorphic", [False, True])
def test_registration_net_forward_backward(shape, diffeomorphic):
    ndim = len(shape)
    net = L.RegistrationNet(ndim, features=(4, 8, 8), diffeomorphic=diffeomorphic)
    f, m = torch.rand(2, 1, *shape), torch.rand(2, 1, *shape)
    out = net(f, m)
    assert out["dvf"].shape == (2, ndim, *shape)
    assert out["moved"].shape == (2, 1, *shape)
    assert ("velocity" in out) == diffeomorphic
    # near-zero last layer: the untrained network is (almost) the identity
    assert out["dvf"].abs().max() < 0.1
    assert torch.allclose(out["moved"], m, atol=0.05)
    (out["moved"].mean() + out["dvf"].pow(2).mean()).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads[:2])  # the gradient reaches the first layer


def test_registration_net_scale_upsamples_field():
    net = L.RegistrationNet(2, features=(4, 8), scale=0.5)
    out = net(torch.rand(1, 1, 33, 29), torch.rand(1, 1, 33, 29))
    assert out["dvf"].shape == (1, 2, 33, 29)
    coarse = regedu.resize(torch.rand(1, 1, 33, 29), scale=0.5).shape[2:]
    assert out["regularise"][0].shape[2:] == coarse and max(coarse) <= 17  # the field lives on the coarse grid (regedu.resize by 0.5)


@pytest.mark.parametrize("shape", [(32, 28), (12, 16, 14)])
def test_affine_net_starts_at_identity_and_outputs_library_matrix(shape):
    ndim = len(shape)
    net = L.AffineNet(ndim, features=(4, 8, 8), hidden=8)
    m = torch.rand(2, 1, *shape)
    out = net(torch.rand(2, 1, *shape), m)
    eye = torch.eye(ndim + 1).expand(2, -1, -1)
    assert torch.allclose(out["matrix"], eye, atol=1e-5)
    assert torch.allclose(out["moved"], m, atol=1e-5)
    # the matrix follows regedu's convention: its dvf and warp agree with the library
    with torch.no_grad():
        net.regressor.mlp[-1].bias.add_(0.05 * torch.randn(ndim * (ndim + 1)))
    out = net(torch.rand(2, 1, *shape), m)
    assert torch.allclose(out["dvf"], regedu.affine_to_dvf(out["matrix"], shape), atol=1e-5)
    assert torch.allclose(out["moved"], regedu.affine_warp(m, out["matrix"]), atol=1e-5)
    assert torch.allclose(regedu.warp(m, out["dvf"]), out["moved"], atol=1e-4)
    assert out["regularise"] == []


def test_chain_composes_stages():
    """Total field = compose(u1, u2); the moving image is resampled once with it."""
    shape = (32, 32)
    affine = L.AffineNet(2, features=(4, 8), hidden=8)
    deform = L.RegistrationNet(2, features=(4, 8), scale=0.5, final_init_std=0.5)
    with torch.no_grad():
        affine.regressor.mlp[-1].bias.copy_(torch.tensor([1.0, 0.05, 0.02, -0.03, 0.95, -0.01]))
    chain = L.RegistrationChain([affine, deform])
    f, m = torch.rand(1, 1, *shape), torch.rand(1, 1, *shape)
    out = chain(f, m)
    u1 = out["stages"][0]["dvf"]
    u2 = out["stages"][1]["dvf"]
    assert u1.abs().max() > 0.3 and u2.abs().max() > 0.01
    assert torch.allclose(out["dvf"], regedu.compose(u1, u2), atol=1e-5)
    assert torch.allclose(out["moved"], regedu.warp(m, out["dvf"]), atol=1e-5)
    assert torch.equal(out["matrix"], out["stages"][0]["matrix"])
    # stage 2 saw the output of stage 1
    assert torch.allclose(deform(f, regedu.warp(m, u1))["dvf"], u2, atol=1e-5)
    assert len(out["regularise"]) == 1  # only the deformable stage is regularised


def test_multi_stage_factory_3d():
    chain = L.multi_stage(3, scales=(0.5, 1.0), features=(4, 8))
    assert [type(s).__name__ for s in chain.stages] == ["AffineNet", "RegistrationNet", "RegistrationNet"]
    out = chain(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16))
    assert out["dvf"].shape == (1, 3, 16, 16, 16) and out["matrix"].shape == (1, 4, 4)
    out["moved"].sum().backward()


def test_spatial_transformer_is_theta_through_library():
    stn = L.SpatialTransformer(2, 1, features=(4, 8), output_shape=(20, 24))
    x = torch.rand(3, 1, 28, 28)
    warped, A = stn(x)
    assert warped.shape == (3, 1, 20, 24) and A.shape == (3, 3, 3)
    with torch.no_grad():
        stn.localisation.mlp[-1].bias.copy_(torch.tensor([0.8, 0.2, 0.1, -0.2, 0.9, 0.05]))
    warped, A = stn(x)
    theta = stn.theta(x)
    assert torch.allclose(T.affine_to_theta(A, (20, 24), (28, 28)), theta, atol=1e-5)
    # Jaderberg's grid generator + sampler on theta gives the same image
    grid = torch.nn.functional.affine_grid(theta, (3, 1, 20, 24), align_corners=True)
    ref = torch.nn.functional.grid_sample(x, grid, align_corners=True, padding_mode="border")
    assert torch.allclose(warped, ref, atol=1e-5)


def test_stn_identity_at_init_and_classifier_shapes():
    clf = L.STNClassifier(num_classes=7, features=(4, 8), stn_features=(4, 8))
    x = torch.rand(5, 1, 32, 32)
    warped, A = clf.canonicalise(x)
    assert torch.allclose(warped, x, atol=1e-5)
    assert torch.allclose(A, torch.eye(3).expand(5, -1, -1), atol=1e-5)
    assert clf(x).shape == (5, 7)
    assert L.CNNClassifier(num_classes=7, features=(4, 8))(x).shape == (5, 7)


def test_similarity_and_q_networks_shapes():
    s = L.SimilarityNet(2, features=(4, 8, 8))
    assert s(torch.rand(2, 1, 30, 30), torch.rand(2, 1, 30, 30)).shape == (2, 1, 8, 8)
    assert (s(torch.rand(2, 1, 30, 30), torch.rand(2, 1, 30, 30)) >= 0).all()
    s3 = L.SimilarityNet(3, features=(4, 8))
    assert s3.error(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8)).shape == (1,)
    q = L.QNetwork(n_actions=6, features=(4, 8))
    assert q(torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)).shape == (3, 6)


def test_build_model_round_trip_of_config():
    for model in (L.RegistrationNet(2, features=(4, 8), diffeomorphic=True), L.AffineNet(3, features=(4,), hidden=4),
                  L.multi_stage(2, features=(4, 8)), L.STNClassifier(features=(4,), stn_features=(4,)),
                  L.SimilarityNet(features=(4, 8)), L.QNetwork(features=(4,))):
        clone = L.build_model(type(model).__name__, model.config)
        assert type(clone) is type(model)
        assert [p.shape for p in clone.parameters()] == [p.shape for p in model.parameters()]


def test_errors_name_argument_and_expectation():
    net = L.RegistrationNet(2, features=(4, 8))
    with pytest.raises(ValueError, match=r"RegistrationNet: fixed and moving must have the same spatial size"):
        net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 18))
    with pytest.raises(ValueError, match=r"RegistrationNet: fixed and moving must have 1 channel\(s\) each .* got 2 and 2"):
        net(torch.rand(1, 2, 16, 16), torch.rand(1, 2, 16, 16))
    with pytest.raises(ValueError, match=r"RegistrationNet: fixed must be a 4D tensor"):
        net(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"RegistrationNet: scale must be in \(0, 1\], got 2"):
        L.RegistrationNet(2, scale=2)
    with pytest.raises(ValueError, match=r"ndim must be 2 or 3, got 4"):
        L.UNet(4)
    with pytest.raises(ValueError, match=r"UNet: features must be at least 1 positive channel counts"):
        L.UNet(2, features=())
    with pytest.raises(ValueError, match=r"build_model: unknown model class 'Foo'"):
        L.build_model("Foo", {})
    with pytest.raises(ValueError, match=r"RegistrationChain: stages must contain at least one"):
        L.RegistrationChain([])


def test_layers_module_holds_the_building_blocks():
    from regedu.learning import layers, networks

    # one definition of each block; the old private names of networks.py are aliases of the public ones
    assert networks.ConvBlock is layers.ConvBlock and networks._conv is layers.conv_class
    assert networks._pair_input is layers.pair_input and networks._check_features is layers.check_features
    enc = layers.strided_encoder(2, 3, (4, 8, 8))
    assert enc(torch.rand(1, 3, 20, 16)).shape == (1, 8, 5, 4)  # two halvings, rounded up
    reg = layers.ConvRegressor(3, 2, 5, features=(4, 8), hidden=8, pool=2)
    assert reg(torch.rand(2, 2, 8, 8, 8)).shape == (2, 5)
    x = layers.pair_input("f", torch.zeros(2, 1, 6, 6, dtype=torch.uint8), torch.ones(2, 1, 6, 6), 2, 1)
    assert x.shape == (2, 2, 6, 6) and x.dtype == torch.float32 and x[:, 1].eq(1).all()
    with pytest.raises(ValueError, match=r"f: fixed and moving must have the same batch size.*got 2 and 3"):
        layers.pair_input("f", torch.rand(2, 1, 6, 6), torch.rand(3, 1, 6, 6), 2, 1)
    with pytest.raises(ValueError, match=r"ConvBlock: out_channels must be >= 1, got 0"):
        layers.ConvBlock(2, 1, 0)


def test_learning_modules_do_not_import_upwards():
    # the building blocks depend on nothing in regedu.learning; networks only on layers (no cycle through
    # rl / similarity_net / stn, whose models register themselves with layers.register_model)
    import ast
    import pathlib

    root = pathlib.Path(L.__file__).parent

    def imported(name):
        tree = ast.parse((root / f"{name}.py").read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}

    assert imported("layers") == set()
    assert imported("networks") <= {"layers"}
    assert imported("stn") <= {"layers"}


def test_every_model_class_of_the_package_is_registered():
    from regedu.learning.layers import MODELS

    models = {name for name in L.__all__ if isinstance(getattr(L, name), type) and issubclass(getattr(L, name), torch.nn.Module)}
    building_blocks = {"ConvBlock", "ConvRegressor"}  # parts of models, not models: never saved on their own
    assert building_blocks <= models, "the building blocks are exported"
    missing = sorted(models - building_blocks - set(MODELS))
    assert not missing, f"not rebuildable by build_model: {missing}"
    from regedu.learning.layers import register_model

    with pytest.raises(ValueError, match=r"register_model: a different model class named 'UNet'"):
        register_model(type("UNet", (torch.nn.Module,), {}))


def test_networks_compute_in_their_dtype():
    # dtype policy: integer, bool and float64 images are converted to the network's dtype on entry
    torch.manual_seed(0)
    net = L.RegistrationNet(2, features=(4, 8))
    f = torch.rand(1, 1, 16, 16)
    ref = net(f, f.flip(-1))
    for dtype in (torch.float64, torch.uint8, torch.int64, torch.bool):
        g = (f * 255).to(dtype) if dtype in (torch.uint8, torch.int64) else f.to(dtype) if dtype != torch.bool else f > 0.5
        out = net(g, g.flip(-1))
        assert out["dvf"].dtype == torch.float32 and out["moved"].dtype == torch.float32 and torch.isfinite(out["dvf"]).all()
    out64 = net(f.double(), f.flip(-1).double())
    assert torch.allclose(out64["dvf"], ref["dvf"], atol=1e-6)
    net64 = L.RegistrationNet(2, features=(4, 8)).double()
    assert net64(f, f)["dvf"].dtype == torch.float64  # a float64 network computes in float64
    chain = L.multi_stage(2, features=(4, 8), scales=(0.5,))
    assert chain(f.double(), (f * 255).to(torch.uint8))["moved"].dtype == torch.float32
    assert L.STNClassifier(features=(4,), stn_features=(4,))(torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.uint8)).shape == (2, 10)
    assert L.IdentityNet()(f, f.double())["moved"].dtype == torch.float64
