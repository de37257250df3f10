"""Autograded coursework for the regedu course: nbgrader sources, student releases, and a sandboxed grader.

Instructor commands: ``python -m coursework release | grade | check`` (see coursework/README.md).
"""
