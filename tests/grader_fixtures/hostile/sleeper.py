"""A cell that waits instead of computing (it uses no CPU time, so the CPU-time limit never fires):
the cell's wall-clock backstop interrupts it and grading goes on: full marks."""
# %% after q2_grid
import time

time.sleep(100_000)
