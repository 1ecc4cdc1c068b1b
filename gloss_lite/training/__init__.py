"""Training: the only place that holds a model, an optimiser and data together.

======================  ================================================================  =======
module                  what it holds                                                     notebook
======================  ================================================================  =======
``config``              ``TrainConfig``, the course's and the authors' recipes             05, 07
``loop``                ``fit``: the epoch, the step (plain and cached), evaluation         05, 06
``checkpoint``          the checkpoint format, checksum, fingerprints, atomic save         05
``tune``                G-Loss-O: an Optuna search over sigma, gamma, lambda, lr           04
``sampling``            class-balanced batches (two of every class)                        08
``cached``              a graph larger than memory: chunked, replayed embedding            08
``distributed``         ``fit`` under torchrun: shares of the global batch, DDP            08
``ddp_check``           the torchrun self-check (``python -m gloss_lite.training.ddp_check``) 08
======================  ================================================================  =======
"""

from .checkpoint import BEST_NAME, CHECKPOINT_NAME, CheckpointError
from .config import AUTHORS_MODEL, AUTHORS_SEARCH_SPACE, AUTHORS_TUNING, LOSSES, RECIPES, TrainConfig
from .loop import TrainingDivergedError, TrainResult, balanced_class_weights, estimate_sigma, fit, gradient_share
from .tune import tune

__all__ = [
    "AUTHORS_MODEL", "AUTHORS_SEARCH_SPACE", "AUTHORS_TUNING", "BEST_NAME", "CHECKPOINT_NAME", "LOSSES", "RECIPES",
    "CheckpointError", "TrainConfig", "TrainResult", "TrainingDivergedError", "balanced_class_weights",
    "estimate_sigma", "fit",
    "gradient_share", "tune",
]
