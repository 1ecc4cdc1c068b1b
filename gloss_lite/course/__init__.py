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
``grading``     grading a class's submissions
``site``        the course as a website
==============  =====================================================================
"""
