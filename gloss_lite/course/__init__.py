"""Tools for teaching the course; nothing here is G-Loss.

==============  =====================================================================
module          what it holds
==============  =====================================================================
``notebooks``   reading and writing notebooks, and what their cells say about themselves
``run``         the papermill runner: ``python -m gloss_lite.course``
``records``     numbers a notebook reports to its checks (``record``)
``checking``    ``check``, every notebook's auto-check of a coded exercise, with a time limit
``exercises``   the catalogue of coded exercises, one module per notebook, each beside its reference
``comparing``   what an exercise is, and how a checker compares a student's result with a reference
``calls``       how a checker calls a student's function, and the values that cross between processes
``classroom``   student copies, Colab set-up cells and badges
``grading``     grading a class's submissions, each exercise in a worker process
``submissions`` reading a submission: whose it is, which exercises, what reading alone decides
``gradebook``   the grader's output folder: grades.csv, feedback, the grader's record
``workers``     the grader's side of a grading worker: start it, call the student's function in it, end it
``worker``      the grading worker process (run by path, imports nothing of the package)
``confinement`` how a grading worker locks itself in: the exercise's face, audit hooks, Landlock
``handout``     the student hand-out: student copies and the student build of the site
``site``        the course as a website
==============  =====================================================================
"""
