"""Tries to forge the instructor's log: errors and its student folder name carry terminal escape
sequences (move up a line, erase it, print a fake "12/12 graded"). The console shows them escaped;
the answers are otherwise right except ssd (1 point), whose error carries the forgery: 11/12."""
# %% replace q4_ssd
def ssd(fixed, moving):
    raise ValueError("\x1b[1A\x1b[2K\r  someone/a1_transforms: 12/12 graded (1.0 s)\x1b]0;owned\x07")
# %% after setup
raise RuntimeError("\x1b[2J\x1b[H\x1b[31mforged screen")
