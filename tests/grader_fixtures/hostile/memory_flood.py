"""Pushes the grading worker's memory: many output messages of 24 MB each (every one under the
per-message cap) and an answer with 5.5 million elements that a test comparison would broadcast.
The worker's memory stays bounded (messages are dropped past a short queue, results over the
element cap are refused with a reason): only q4 (1 point) is lost: 11/12."""
# %% after q1_rotation
for _ in range(12):
    print("z" * 24_000_000)
# %% replace q4_ssd
def ssd(fixed, moving):
    return torch.zeros(5_500_000)
