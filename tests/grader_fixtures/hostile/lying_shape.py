"""Returns objects that lie: `.shape` says what the test wants, `.float()`, `.double()`, `.detach()`
and `.to()` return an empty tensor, comparisons and indexing return empty tensors, `float()` of it is
whatever the test hopes. The grader never trusts an object's own `.shape`: it only accepts plain
tensors rebuilt from plain data, so every question scores zero."""
# %% after setup
class Liar:
    def __init__(self, shape):
        self.shape = torch.Size(shape)
        self.dtype = torch.float32

    def dim(self):
        return len(self.shape)

    def float(self, *a, **k):
        return torch.empty(0, *self.shape[1:])

    double = detach = to = cpu = clone = float

    def __getitem__(self, index):
        return torch.empty(0)

    def __matmul__(self, other):
        return torch.empty(0)

    def __sub__(self, other):
        return torch.zeros(())

    def __float__(self):
        return 0.0

    def __len__(self):
        return self.shape[0]
# %% replace q1_rotation
def rotation_matrix(angle, center):
    return Liar((3, 3))
# %% replace q2_grid
def sampling_grid(A, shape):
    return Liar((2, *shape))
# %% replace q3_sample
def sample(image, grid):
    return Liar(tuple(image.shape))
# %% replace q4_ssd
def ssd(fixed, moving):
    return Liar(())
# %% replace q5_ncc
def ncc(fixed, moving):
    return Liar(())
# %% replace q6_register
def register_rigid(fixed, moving, iterations=100, lr=0.1):
    return Liar((3, 3))
