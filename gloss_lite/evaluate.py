"""Scoring a fine-tuned encoder: with its linear head, and with label propagation.

Taught in ``notebooks/05_fine_tuning.ipynb``.

Two ways to classify a document ``q`` once the encoder is trained:

- **the head**: ``argmax softmax(A e_q + b)``, the classifier trained with cross-entropy;
- **label propagation** (transductive, the view G-Loss trains for): put ``q`` in one graph
  with a labelled reference set (the training documents), keep the reference labels visible
  and propagate them, ``F_U = (I - T_UU)^-1 T_UL Y_L``, with the kernel width used in training.

Metrics are scikit-learn's accuracy and macro-F1 (the unweighted mean of per-class F1, which
counts a rare class as much as a frequent one).
"""

from __future__ import annotations

import torch
from sklearn.metrics import accuracy_score, f1_score

from .graph import gaussian_affinity, transition_matrix
from .lpa import propagate

__all__ = ["classification_metrics", "lpa_predict"]


def classification_metrics(true_labels, predicted_labels) -> dict:
    """``{"accuracy": ..., "macro_f1": ...}`` from scikit-learn."""
    true_labels, predicted_labels = torch.as_tensor(true_labels).cpu(), torch.as_tensor(predicted_labels).cpu()
    return {
        "accuracy": float(accuracy_score(true_labels, predicted_labels)),
        "macro_f1": float(f1_score(true_labels, predicted_labels, average="macro", zero_division=0)),
    }


def lpa_predict(
    reference_embeddings: torch.Tensor,
    reference_labels: torch.Tensor,
    query_embeddings: torch.Tensor,
    num_classes: int,
    *,
    sigma: float,
    scheme: str = "gloss",
) -> torch.Tensor:
    """Labels of the query documents by propagation over one graph of reference + query nodes.

    The graph is dense, ``(R + Q)^2`` entries: keep the reference set to a few thousand
    documents (``gloss_lite.data.stratified_sample``). Computed in float64 on the embeddings'
    device.
    """
    embeddings = torch.cat([reference_embeddings, query_embeddings]).double()
    labels = torch.cat([reference_labels.to(embeddings.device), torch.full((len(query_embeddings),), -1,
                                                                          device=embeddings.device)])
    visible = torch.arange(len(embeddings), device=embeddings.device) < len(reference_embeddings)
    log_affinity = gaussian_affinity(embeddings, sigma, log=True)
    transition = transition_matrix(log_affinity, scheme, log=True)
    return propagate(transition, labels, visible, num_classes)[~visible].argmax(dim=1).cpu()
