"""G-Loss in other people's training loops: sentence-transformers and the Hugging Face Trainer.

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``.

Both integrations train on the loss of the course, for a batch with embeddings ``E``, labels
``y`` and a stratified mask of visible labels (``gloss_lite.masking.split_mask``):

    loss = (1 - lam) * CE(head(E), y) + lam * G-Loss(E, y, mask; sigma)

with the names and defaults of ``gloss_lite.integrations.terms`` (``num_labels``, ``lam = 0.5``,
``sigma = "sqrt"``, ``gamma = 0.7``, class-balanced batches off); ``lam`` lies in ``(0, 1]``.

sentence-transformers::

    model = load_sentence_transformer()                         # the offline MiniLM
    loss = GLossLoss(model, num_labels=2)
    args = SentenceTransformerTrainingArguments(output_dir)     # batch_sampler=balanced_batch_sampler: balanced
    SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(
        {"text": texts, "label": labels}), loss=loss).train()

``GLossLoss`` returns one tensor, so the library's wrappers compose with it
(``MatryoshkaLoss(model, GLossLoss(model, 2, lam=1.0), [384, 128])``); ``return_terms=True``
returns ``{"gloss": lam * G, "ce": (1 - lam) * CE}`` instead, which ``SentenceTransformerTrainer``
adds up and logs term by term. sigma and the CE head live in a ``GLossHead`` appended to the
model (``gloss_lite.integrations.head``): they are saved with it and restored with every checkpoint.
``gather_across_devices=True`` builds one graph of every process's batch
(``gloss_lite.losses.GLoss(gather=True)``); ``mini_batch_size=m`` embeds the batch ``m`` texts
at a time and caches the gradient of the embeddings (sentence-transformers' ``CachedLossMixin``,
the pattern of ``gloss_lite.training.cached``), so the graph can be larger than memory allows.
``GLossEvaluator`` (``gloss_lite.integrations.evaluator``) scores by the head and by propagation.

Hugging Face ``Trainer``, for a sequence-classification model: ``GLossTrainer``
(``gloss_lite.integrations.trainer``).

``load_sentence_transformer(path)`` loads a ``SentenceTransformer`` from a ``pathlib.Path``
too (sentence-transformers wants ``str(path)``), and a saved G-Loss model with its ``GLossHead``.
"""

from .evaluator import GLossEvaluator
from .head import GLossHead
from .loss import GLossLoss, balanced_batch_sampler, load_sentence_transformer
from .terms import DEFAULT_GAMMA, DEFAULT_LAM, DEFAULT_SIGMA, UnmaskableBatchWarning, can_mask
from .trainer import GLossTrainer

__all__ = [
    "DEFAULT_GAMMA",
    "DEFAULT_LAM",
    "DEFAULT_SIGMA",
    "GLossEvaluator",
    "GLossHead",
    "GLossLoss",
    "GLossTrainer",
    "UnmaskableBatchWarning",
    "balanced_batch_sampler",
    "can_mask",
    "load_sentence_transformer",
]
