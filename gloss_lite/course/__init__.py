"""Tools for teaching the course; nothing here is G-Loss.

==============  =====================================================================
module          what it holds
==============  =====================================================================
``run``         the papermill runner: ``python -m gloss_lite.course``
``records``     numbers a notebook reports to its checks (``record``)
``exercises``   the coded exercises and ``check``, every notebook's auto-check
``classroom``   student copies, Colab set-up cells and badges
``grading``     grading a class's submissions
``site``        the course as a website
==============  =====================================================================
"""
