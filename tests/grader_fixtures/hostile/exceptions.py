"""A cell that raises, a cell that asks for 20 GB at once (the kernel's address-space limit turns it
into a MemoryError instead of exhausting the machine), and an answer that raises when called. Only
the question whose answer raises (q4, 1 point) loses its points; its feedback names the error."""
# %% after q1_rotation
raise RuntimeError("a cell that fails")
# %% after q2_grid
hog = bytearray(20 * 1024**3)
# %% replace q4_ssd
def ssd(fixed, moving):
    raise ValueError("not finished yet")
