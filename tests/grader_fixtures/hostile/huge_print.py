"""Floods the output: one 50 MB print and 200 000 lines. The grader keeps only a capped amount of
text (and drops messages over its size cap), so memory stays bounded: full marks."""
# %% after q1_rotation
print("x" * 50_000_000)
for i in range(200_000):
    print(i, "y" * 40)
