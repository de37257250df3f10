"""nbgrader configuration for using this folder as an nbgrader course directory directly.

    cd coursework
    nbgrader generate_assignment a1_transforms --force      # -> release/a1_transforms/
    nbgrader autograde a1_transforms                        # submitted/<student>/a1_transforms/ -> autograded/
    nbgrader export                                         # -> grades.csv

Our own commands (``python -m coursework release`` / ``grade``) do not need this file; see README.md
for why grading with ``python -m coursework grade`` is safer than ``nbgrader autograde``.
"""

import os

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "regedu"
# the assignments train and register small models on a CPU: allow more than nbgrader's default 30 s per cell
c.Execute.timeout = 300
# the stubs that replace the solutions (nbgrader's defaults, spelled out)
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
