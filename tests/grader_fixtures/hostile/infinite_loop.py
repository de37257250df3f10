"""A cell that never ends. The grader interrupts it at the cell time limit and goes on: every
answer is still graded (full marks); the cell is reported as timed out."""
# %% after q2_grid
while True:
    pass
