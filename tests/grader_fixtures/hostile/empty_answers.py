"""Answers nothing but returns empty tensors, which `torch.allclose` calls close to anything
(`torch.allclose(torch.empty(0, 1, 3), torch.eye(3))` is True). The hidden tests check type, shape,
dtype and values of every result: zero."""
# %% replace q1_rotation
def rotation_matrix(angle, center):
    return torch.empty(0, 1, 3)
# %% replace q2_grid
def sampling_grid(A, shape):
    return torch.empty(0, 1, 1, 1)
# %% replace q3_sample
def sample(image, grid):
    return torch.empty(0, 1, 1, 1)
# %% replace q4_ssd
def ssd(fixed, moving):
    return torch.empty(0)
# %% replace q5_ncc
def ncc(fixed, moving):
    return torch.empty(0)
# %% replace q6_register
def register_rigid(fixed, moving, iterations=100, lr=0.1):
    return torch.empty(0, 1, 3)
