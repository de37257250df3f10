"""The recommended settings are the defaults: ``register(fixed, moving, transform=...)`` with nothing else
beats simple baselines by a clear margin on held-out pairs (``PairDataset(mode="eval")``: a deformation
model the course does not train on, independent intensity changes). Accuracy only, no timing."""

from __future__ import annotations

import inspect

import pytest
import torch

import regedu
import regedu.data as data
from regedu.registration import register
from regedu.registration.engine import DEFAULT_MATRIX_SIMILARITY, DEFAULT_SIMILARITY


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    ds = data.PairDataset("brain", mode="eval", size=2, ndim=2)
    return [{k: v[None] for k, v in ds[i].items()} for i in range(2)]


def _dice(item: dict, dvf: torch.Tensor) -> float:
    warped = regedu.warp_labels(item["moving_labels"], dvf, mode="nearest")
    return float(regedu.dice(item["fixed_labels"], warped, labels=[1, 2, 3]))


def test_the_default_similarity_is_the_recommended_one():
    assert DEFAULT_SIMILARITY == "lncc" and DEFAULT_MATRIX_SIMILARITY == "ncc"
    assert inspect.signature(register).parameters["similarity"].default is None  # None = the model's default


def test_matrix_models_default_to_ncc_and_deformable_ones_to_lncc(pairs):
    item = pairs[0]
    f, m = item["fixed"], item["moving"]
    for transform, name, other in (("rigid", "ncc", "lncc"), ("affine", "ncc", "lncc"), ("bspline", "lncc", "ncc")):
        default = register(f, m, transform=transform, iterations=3, progress=False)
        named = register(f, m, transform=transform, similarity=name, iterations=3, progress=False)
        assert torch.equal(default.dvf, named.dvf), transform
        assert not torch.equal(default.dvf, register(f, m, transform=transform, similarity=other, iterations=3, progress=False).dvf)


@pytest.mark.parametrize("transform", ["bspline", "svf"])
def test_the_default_call_beats_simple_baselines(pairs, transform):
    """Dice of the default call > Dice before registration + 0.05, > the affine default + 0.03 and
    > the same model with the old default similarity (MSE, which intensity changes mislead) + 0.01,
    averaged over two held-out pairs; and no folding."""
    ours, before, affine, mse = [], [], [], []
    for item in pairs:
        f, m = item["fixed"], item["moving"]
        result = register(f, m, transform=transform, progress=False)
        ours.append(_dice(item, result.dvf))
        assert float(regedu.folding_fraction(result.dvf)[0]) < 1e-3
        before.append(_dice(item, torch.zeros_like(result.dvf)))
        affine.append(_dice(item, register(f, m, transform="affine", progress=False).dvf))
        mse.append(_dice(item, register(f, m, transform=transform, similarity="mse", progress=False).dvf))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(ours) > mean(before) + 0.05, (ours, before)
    assert mean(ours) > mean(affine) + 0.03, (ours, affine)
    assert mean(ours) > mean(mse) + 0.01, (ours, mse)


def test_a_full_resolution_only_similarity_gets_one_pyramid_level_by_default():
    """Learned similarities are trained on full-resolution images, so register runs them on one level unless
    ``levels`` is given; an ordinary callable keeps the default pyramid."""
    from regedu.learning.features import PatchAutoencoder, feature_similarity
    from regedu.learning.similarity_net import SimilarityNet

    g = torch.Generator().manual_seed(0)
    fixed = regedu.filters.gaussian_blur(torch.rand(1, 1, 48, 40, generator=g), 2.0)
    moving = torch.roll(fixed, 1, 2)

    def mse(f, m, mask=None):
        return (f - m).pow(2).mean()

    def levels_used(similarity, **kw):
        r = regedu.register(fixed, moving, transform="rigid", similarity=similarity, progress=False, **kw)
        return sorted(set(r.history["level"]))

    assert levels_used(mse) == [0, 1]
    for learned in (SimilarityNet(2, features=(4,)).as_loss(), feature_similarity(PatchAutoencoder(2, patch=5, features=4, hidden=8))):
        assert getattr(learned, "full_resolution_only") is True
        assert levels_used(learned) == [0]
        assert levels_used(learned, levels=2) == [0, 1]  # an explicit pyramid is kept
