"""The paper's comparison: the grid of datasets, losses, recipes and seeds, and its results.

``run`` runs the grid (``python -m gloss_lite.reproduction``); ``results`` reads results files
and turns them into paired intervals and verdicts. Taught in
``notebooks/07_reproducing_the_paper.ipynb``.
"""
