"""gloss_lite: the helper package of the G-Loss course.

One module per concept, in the order the notebooks teach them:

============ ===================================================== =============================
module       what it holds                                         notebook
============ ===================================================== =============================
data         the course's datasets, MR, R8 and R52                 00_overview
encoders     transformer + pooling: texts to embeddings            00_overview
graph        Gaussian-kernel affinity and transition matrices      01_similarity_graph
lpa          label propagation: iterative and closed form          02_label_propagation
masking      which labels stay visible in a minibatch              03_masking_and_the_loss
losses       G-Loss (function and module), mixing with CE          03_masking_and_the_loss
sigma        kernel-width estimates (SQRT, DICM)                   04_sigma_estimation
train        the training loop for every loss; G-Loss-O (Optuna)   05_fine_tuning
evaluate     head and transductive-LPA scores                      05_fine_tuning
losses       the baselines: SupCon, triplet, contrastive           06_comparing_losses
results      results files and the convergence measure             06_comparing_losses
reproduce    the paper's grid of runs, their summary and verdicts  07_reproducing_the_paper
cached       cached (GradCache-style) steps: a graph beyond memory 08_the_graph_beyond_one_batch
distributed  one graph across processes: gather, masks, scaling    08_the_graph_beyond_one_batch
sampling     class-balanced batches                                08_the_graph_beyond_one_batch
integrations G-Loss for sentence-transformers and the HF Trainer   08_the_graph_beyond_one_batch
============ ===================================================== =============================

``exercises`` (the auto-checks of every notebook's coded exercises), ``classroom`` (student
copies, Colab set-up cells and badges), ``runtime`` (seeds, devices), ``plots`` (shared
figures), ``records`` (numbers a notebook reports to its tests) and ``course`` (the papermill
runner) serve every notebook.
"""

__version__ = "0.1.0"
