"""Runs out of the notebook's CPU time while the tests run: two slow cells, then ncc (q5) and
register_rigid (q6) compute forever when called. The questions whose tests passed before the time
ran out keep their points (as in nbgrader): q1-q4, 7 points, status timeout."""
# %% after q1_rotation
import time


def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


burn(3.5)
# %% after q2_grid
burn(3.5)
# %% replace q5_ncc
def ncc(fixed, moving):
    while True:
        pass
# %% replace q6_register
def register_rigid(fixed, moving, iterations=100, lr=0.1):
    while True:
        pass
