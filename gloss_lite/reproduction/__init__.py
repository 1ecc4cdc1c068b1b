"""The paper's comparison: the grid of datasets, losses, recipes and seeds, and its results.

Taught in ``notebooks/07_reproducing_the_paper.ipynb``.

==============  ==================================================================================
module          what it holds
==============  ==================================================================================
``run``         the grid and its command line (``python -m gloss_lite.reproduction``)
``presets``     the grids it knows: ``cpu``, ``full``, ``gpu-10min``
``one_run``     one run: its method, configuration, data, training and rows
``workers``     runs in worker processes: GPUs in turn, a thread budget, failures and fatal errors
``store``       results files written safely; claims on runs shared by two invocations
``budget``      a grid fitted into a time budget: measured, estimated, epochs trimmed
``results``     the one results reader, the run key, paired intervals, verdicts, summaries
``gpu_course``  the GPU part of the course in one command
==============  ==================================================================================
"""
