"""The sandboxed autograder behind ``python -m coursework grade`` (design: coursework/README.md).

* :mod:`.spec`     what to grade, read from the source notebooks' nbgrader metadata
* :mod:`.batch`    the batch: finds submissions, runs one worker per submission, writes the gradebook, feedback, export
* :mod:`.worker`   grades one submission: runs the student's cells, then the tests (in the worker)
* :mod:`.rpc`      calls from the tests into the student's kernel, plain data only
* :mod:`.kernel`   a Jupyter kernel with hard deadlines, capped output, restarts
* :mod:`.bwrap`    the sandbox (Linux, bubblewrap): namespaces, read-only allow-listed file system, quotas
* :mod:`.stage`    root mode: drop to an unprivileged uid before bubblewrap runs
* :mod:`.sandbox`  limits, clean environment, ending every process a submission started
"""
