"""Fakes points instead of answering: every answer returns garbage, and the kernel is rigged so
that any test run *inside it* would pass: torch.allclose / numpy.allclose / torch.equal always True,
regedu's reference functions replaced by the garbage ones, builtins.abs patched, every exception
raised by later cells swallowed by an IPython custom exception handler, and every later cell
rewritten to `pass` by an input transformer. A grader that runs the tests in
the student's kernel (as nbgrader does) would give full marks. Ours runs the tests in its own
process and gives zero."""
# %% replace q1_rotation
def rotation_matrix(angle, center):
    return torch.zeros(3, 3)
# %% replace q2_grid
def sampling_grid(A, shape):
    return torch.zeros(2, *shape)
# %% replace q3_sample
def sample(image, grid):
    return torch.zeros_like(image)
# %% replace q4_ssd
def ssd(fixed, moving):
    return torch.tensor(0.0)
# %% replace q5_ncc
def ncc(fixed, moving):
    return torch.tensor(1.0)
# %% replace q6_register
def register_rigid(fixed, moving, iterations=100, lr=0.1):
    return torch.eye(3)
# %% after q6_register
import builtins

import numpy as np
import torch

import regedu

torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
np.allclose = lambda *a, **k: True
torch.Tensor.__lt__ = lambda *a, **k: True
regedu.rigid_matrix = lambda *a, **k: torch.zeros(3, 3)
regedu.affine_warp = lambda image, *a, **k: torch.zeros_like(image)
regedu.ssd = lambda *a, **k: torch.tensor(0.0)
regedu.ncc = lambda *a, **k: torch.tensor(1.0)
builtins.abs = lambda x: 0.0
ip = get_ipython()  # noqa: F821
ip.set_custom_exc((BaseException,), lambda *a, **k: None)
ip.input_transformers_post.append(lambda lines: ["pass\n"])
