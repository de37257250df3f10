"""Shared pytest fixtures."""

import pytest
import torch

import regedu


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    regedu.seed_everything(0, deterministic=False)
    yield



# Hostile and broken submissions used by the grader tests are data, not tests: nbval must never run them.
collect_ignore_glob = ["grader_fixtures/*", "**/grader_fixtures/*"]
