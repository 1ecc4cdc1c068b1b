"""The grids ``python -m gloss_lite.reproduction`` knows: ``cpu``, ``full`` and ``gpu-10min``.

Taught in ``notebooks/07_reproducing_the_paper.ipynb``.

======================  ===========================================================================
preset                  what it runs
======================  ===========================================================================
``cpu``                 MR and R8, stratified subsets (320 / 160 / 320), 4 epochs, batch 32,
                        64 tokens; CE and G-Loss+CE under both recipes; 3 seeds (2 CPU cores:
                        about 2 hours with ``--jobs 2``)
``full``                all five datasets on full splits; the course recipe at 10 epochs, the
                        authors' as they ran it (up to 200 epochs, patience 10, batch 128, fp32);
                        SCL+CE and triplet+CE under the authors' recipe; 3 seeds: 90 runs, about
                        6-40 H200-hours
``gpu-10min``           the ``full`` grid in about 10 minutes of one large GPU: bf16 autocast, the
                        authors' recipe capped at 10 epochs; it measures the first steps of each
                        method, estimates the whole grid and trims epochs (never datasets) to fit
                        ``budget_seconds`` (``gloss_lite.reproduction.budget``)
======================  ===========================================================================

A preset's files go to ``outputs/reproduction/<preset>.csv`` under the working directory unless
``--output`` names another file; the results committed in the repository (``results/``) are
written only when ``--output`` names them.
"""

from __future__ import annotations

import copy
from pathlib import Path

__all__ = ["BENCHMARKS", "default_output", "FULL_METHODS", "OUTPUT_FOLDER", "preset", "PRESETS"]

OUTPUT_FOLDER = Path("outputs") / "reproduction"  # relative to the working directory
FULL_METHODS = ["ce/course", "gloss+ce/course", "ce/authors", "gloss+ce/authors", "scl+ce/authors",
                "triplet+ce/authors"]
BENCHMARKS = ["mr", "r8", "r52", "ohsumed", "20ng"]
PRESETS = {
    "cpu": {
        "datasets": ["mr", "r8"],
        "methods": ["ce/course", "gloss+ce/course", "ce/authors", "gloss+ce/authors"],
        "seeds": [0, 1, 2],
        "sizes": {"train": 320, "val": 160, "test": 320},  # stratified subsets
        "budget": {"course": {"epochs": 4, "batch_size": 32, "max_length": 64},
                   "authors": {"epochs": 4, "batch_size": 32, "max_length": 64}},
    },
    "full": {
        "datasets": BENCHMARKS,
        "methods": FULL_METHODS,
        "seeds": [0, 1, 2],
        "sizes": {"train": None, "val": None, "test": None},
        "budget": {"course": {"epochs": 10, "batch_size": 32, "max_length": 128},
                   "authors": {}},  # the recipe's own: up to 200 epochs, patience 10, batch 128, fp32
    },
    "gpu-10min": {
        "datasets": BENCHMARKS,
        "methods": FULL_METHODS,
        "seeds": [0, 1, 2],
        "sizes": {"train": None, "val": None, "test": None},
        "budget": {"course": {"epochs": 10, "batch_size": 32, "max_length": 128, "amp": "auto"},
                   "authors": {"epochs": 10, "amp": "auto"}},
        "budget_seconds": 600,
        "notes": ["The authors' recipe trains up to 200 epochs (patience 10) in fp32; this preset caps it at "
                  "10 epochs, before any trimming, and runs both recipes under bf16 autocast."],
    },
}


def preset(name: str) -> dict:
    """A copy of preset ``name`` (``PRESETS``), with its name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
    return {**copy.deepcopy(PRESETS[name]), "preset": name}


def default_output(name: str) -> Path:
    """Where preset ``name`` writes its results file by default, relative to the working directory."""
    return OUTPUT_FOLDER / f"{name}.csv"
