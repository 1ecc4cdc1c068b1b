"""The vocabulary, defaults and loss terms shared by ``GLossLoss`` and ``GLossTrainer``.

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``.

Both integrations, like ``gloss_lite.training.fit``, train on

    loss = (1 - lam) * CE(head(E), y) + lam * G-Loss(E, y, mask; sigma)

with the same names and defaults: ``num_labels`` (``C``, as transformers and sentence-transformers
call it), ``lam = 0.5`` (the weight of G-Loss, the course's recipe), ``sigma = "sqrt"``,
``gamma = 0.7``, and class-balanced batches off (a default that keeps the training
distribution). One thing differs, because a loss inside someone else's loop sees batches, not
the dataset: a sigma rule is applied to the first training batch that can be masked (its
embeddings, detached), where ``fit`` uses up to 2,000 training texts. The value is then fixed,
shared by every process (rank 0's, broadcast) and saved with the model and its checkpoints.

**Masks.** Training masks are drawn from torch's global generator. The trainers seed it from
``args.seed`` and save and restore it in every checkpoint, so a resumed run draws the masks the
uninterrupted run draws. Evaluation draws each mask from a fresh generator seeded by ``seed``:
training's stream is untouched and an evaluation loss repeats.

**A batch G-Loss cannot mask.** The mask needs a class with two documents (one visible, one
hidden). A batch without one gets a G-Loss term of 0 (a zero that keeps the graph, so backward
still runs) and an ``UnmaskableBatchWarning``; its CE term still trains.
"""

from __future__ import annotations

import math
import warnings
from typing import cast

import torch
import torch.nn.functional as F

from .. import collectives
from ..losses import GLoss, g_loss
from ..masking import split_mask
from ..sigma import SIGMA_RULES, check_sigma_setting
from ..sigma import estimate as estimate_by_rule

__all__ = [
    "can_mask",
    "check_lam",
    "check_num_labels",
    "check_sigma",
    "CITATION",
    "DEFAULT_GAMMA",
    "DEFAULT_LAM",
    "DEFAULT_SIGMA",
    "estimate_sigma",
    "graph_term",
    "labels_tensor",
    "make_gloss",
    "SIGMA_RULES",
    "UnmaskableBatchWarning",
    "weighted_terms",
]

DEFAULT_LAM = 0.5
DEFAULT_SIGMA = "sqrt"
DEFAULT_GAMMA = 0.7
CITATION = """
@inproceedings{sharma2025gloss,
    title = {G-Loss: Graph-Guided Fine-Tuning of Language Models},
    author = {Sharma, Aditya and Agarwal, Sahil and Kumar, Ashish},
    booktitle = {Learning on Graphs Conference (LoG)},
    year = {2025},
    eprint = {2604.25853},
    archivePrefix = {arXiv},
}
"""


class UnmaskableBatchWarning(UserWarning):
    """A batch with no class of two documents: G-Loss cannot hide a label, so its term is 0 this step."""


def check_lam(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or math.isnan(lam) or not 0.0 < lam <= 1.0:
        raise ValueError(
            f"lam is the weight of G-Loss in (1 - lam) * CE + lam * G-Loss and must lie in (0, 1], got {lam!r} "
            "(lam = 1 is G-Loss alone; lam = 0 would be plain cross-entropy, which needs no G-Loss)"
        )
    return float(lam)


def check_sigma(sigma) -> float | None:
    """None for a rule ("sqrt", "dicm") still to be estimated, else the number as a float."""
    check_sigma_setting(sigma)
    return None if isinstance(sigma, str) else float(sigma)


def check_num_labels(num_labels) -> int:
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(f"num_labels must be an int >= 2, got {num_labels!r}")
    return num_labels


def can_mask(labels: torch.Tensor) -> bool:
    """True when some class has two documents in ``labels``, so a mask can hide one and show one."""
    return len(labels) >= 2 and bool((torch.unique(labels, return_counts=True)[1] >= 2).any())


def labels_tensor(labels) -> torch.Tensor:
    if labels is None:
        raise ValueError("G-Loss needs the batch's labels: give the dataset a 'label' column of integer class ids")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"G-Loss needs one integer class id per document, got labels of shape {tuple(labels.shape)} "
            f"and dtype {labels.dtype}"
        )
    return labels.long()


def estimate_sigma(rule: str, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """The rule applied to detached embeddings; under several processes, rank 0's value on every rank."""
    value = estimate_by_rule(rule, embeddings.detach().float(), labels.cpu())
    return float(collectives.broadcast_object(value))


def make_gloss(num_labels: int, gamma: float, *, scheme: str, target: str, stratified: bool,
               class_weights, gather: bool) -> GLoss:
    """The training G-Loss: masks from torch's global generator (see the module docstring)."""
    return GLoss(num_labels, 1.0, gamma, scheme=scheme, target=target, class_weights=class_weights,
                 stratified=stratified, seed=None, gather=gather)


def graph_term(gloss: GLoss, embeddings: torch.Tensor, labels: torch.Tensor, sigma: float | None, *,
               training: bool, seed: int) -> torch.Tensor:
    """G-Loss of one batch: a training mask, a seeded evaluation mask, or 0 (with a warning in training).

    With ``gloss.gather`` the batch is the global one (every rank's), and so is the test for a class of two.
    """
    every = collectives.gather_labels(labels) if gloss.gather else labels
    if not can_mask(every) or sigma is None:
        if training:
            warnings.warn(
                f"a batch of {len(labels)} documents has no class with two documents, so G-Loss cannot hide a "
                "label: its G-Loss term is 0 for this step. Use class-balanced batches (GLossTrainer("
                "balanced_batches=True), or batch_sampler=balanced_batch_sampler in the training arguments)",
                UnmaskableBatchWarning,
                stacklevel=4,
            )
        return embeddings.sum() * 0.0
    if training:
        gloss.sigma = sigma
        return gloss(embeddings.float(), labels)  # GLoss gathers itself, one mask agreed by every rank
    if gloss.gather:
        embeddings, labels = collectives.gather_with_grad(embeddings), every
    mask = split_mask(labels, gloss.gamma, generator=torch.Generator().manual_seed(seed), stratified=gloss.stratified)
    weights = cast("torch.Tensor | None", gloss.class_weights)  # a buffer
    return g_loss(embeddings.float(), labels, mask, sigma=sigma, num_classes=gloss.num_classes,
                  class_weights=weights, scheme=gloss.scheme, target=gloss.target)


def weighted_terms(graph: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor,
                   lam: float) -> dict[str, torch.Tensor]:
    """``{"gloss": lam * G, "ce": (1 - lam) * CE}`` (no ``"ce"`` without logits)."""
    terms = {"gloss": lam * graph}
    if logits is not None:
        terms["ce"] = (1.0 - lam) * F.cross_entropy(logits.float(), labels.to(logits.device))
    return terms
