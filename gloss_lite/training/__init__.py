"""Training: the only place that holds a model, an optimiser and data together.

======================  ================================================================  =======
module                  what it holds                                                     notebook
======================  ================================================================  =======
``config``              ``TrainConfig``, the course's and the authors' recipes             05, 07
``loop``                ``fit``: the epochs, batches, evaluation, early stopping            05, 06
``step``                one step: embed, loss terms, backward, clip, optimiser step        05, 06
``checkpoint``          the checkpoint format, checksum, fingerprints, atomic save         05
``tune``                G-Loss-O: an Optuna search over sigma, gamma, lambda, lr           04
``sampling``            class-balanced batches (two of every class)                        08
``cached``              a graph larger than memory: chunked, replayed embedding            08
``distributed``         ``fit`` under torchrun: shares of the global batch, DDP            08
``ddp_check``           the torchrun self-check (``python -m gloss_lite.training.ddp_check``) 08
======================  ================================================================  =======
"""

from .checkpoint import BEST_NAME, CHECKPOINT_NAME, CheckpointError
from .config import AUTHORS_MODEL, AUTHORS_SEARCH_SPACE, AUTHORS_TUNING, LOSSES, RECIPES, TrainConfig, parse_loss
from .loop import TrainResult, balanced_class_weights, estimate_sigma, fit
from .step import TrainingDivergedError, gradient_share
from .tune import tune

__all__ = [
    "AUTHORS_MODEL", "AUTHORS_SEARCH_SPACE", "AUTHORS_TUNING", "BEST_NAME", "CHECKPOINT_NAME", "LOSSES", "RECIPES",
    "CheckpointError", "TrainConfig", "TrainResult", "TrainingDivergedError", "balanced_class_weights",
    "estimate_sigma", "fit", "gradient_share", "parse_loss", "tune",
]
