"""Asks for 20 GB at once. The kernel's address-space limit (8 GB by default) makes the allocation
fail with MemoryError instead of exhausting the machine: that cell errors, full marks otherwise."""
# %% after q3_sample
hog = bytearray(20 * 1024**3)
