"""A cell that raises, and an answer that raises when called. Only the question whose answer
raises (q4, 1 point) loses its points; its feedback names the error."""
# %% after q1_rotation
raise RuntimeError("a cell that fails")
# %% replace q4_ssd
def ssd(fixed, moving):
    raise ValueError("not finished yet")
