"""Shared pytest fixtures."""

import pytest
import torch

import regedu


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    regedu.seed_everything(0, deterministic=False)
    yield

