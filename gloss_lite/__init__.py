"""gloss_lite: the helper package of the G-Loss course.

``import gloss_lite`` gives the method, in the order the notebooks teach it, and loads torch
only:

=========== ============================================================ ======================
module      what it holds                                                notebook
=========== ============================================================ ======================
graph       Gaussian-kernel affinity and transition matrices             01_similarity_graph
lpa         label propagation: iterative and closed form                 02_label_propagation
masking     which labels stay visible in a minibatch                     03_masking_and_the_loss
losses      G-Loss (function and module), mixing with CE                 03_masking_and_the_loss
sigma       kernel-width rules (SQRT, DICM) and their one dispatch       04_sigma_estimation
baselines   SupCon, triplet, contrastive                                 06_comparing_losses
=========== ============================================================ ======================

Imported by name (heavier, or not the method itself):

- layer 0: ``checks`` (argument checks, written once), ``runtime`` (seeds, devices, precision), ``plots``
  (shared figures, the class palette), ``diagrams`` (the method drawn on a small graph),
  ``collectives`` (gathers across processes; a leaf), ``memory`` (activation memory saved for
  backward), ``trends`` (a slope and its interval decide a trend), ``scale_diagrams`` (the
  cached step and the gather, drawn), ``training_plots`` (figures of training runs, notebooks 05
  and 06), ``files`` (every file the tools write, written atomically);
- layer 1: ``data`` (the course's reviews, MR, R8, R52, Ohsumed, 20NG), ``encoders`` (texts to
  embeddings), ``evaluate`` (head and LPA scores), ``explorer`` (one minibatch graph, sliders);
- layer 2: ``training`` (``TrainConfig``, ``fit``, ``tune``; the only place that holds a model,
  an optimiser and data together);
- layer 3: ``integrations`` (sentence-transformers, the Hugging Face Trainer),
  ``reproduction`` (the paper's grid and its verdicts), ``course`` (notebook runner, exercises,
  classroom, grading, website; nothing there is G-Loss).

No module imports one of a higher layer (``tests/test_layers.py``).
"""

from .baselines import ContrastiveLoss, CosineMSELoss, SupConLoss, TripletLoss
from .graph import gaussian_affinity, squared_distances, transition_matrix
from .losses import GLoss, g_loss, mix_losses
from .lpa import propagate
from .masking import split_mask
from .sigma import SIGMA_RULES, estimate, sigma_dicm, sigma_sqrt

__version__ = "0.1.0"

__all__ = [
    "squared_distances", "gaussian_affinity", "transition_matrix",
    "propagate",
    "split_mask",
    "g_loss", "GLoss", "mix_losses",
    "SIGMA_RULES", "sigma_sqrt", "sigma_dicm", "estimate",
    "SupConLoss", "TripletLoss", "ContrastiveLoss", "CosineMSELoss",
]
