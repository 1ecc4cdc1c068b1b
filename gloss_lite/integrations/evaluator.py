"""Scoring a G-Loss sentence-transformers model the way it classifies: by its head and by propagation.

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``.

``GLossEvaluator`` is a sentence-transformers evaluator (pass it to
``SentenceTransformerTrainer(evaluator=...)`` or call it on a model). For the evaluation texts
``q`` with labels ``y`` it reports scikit-learn's accuracy and macro-F1 of two classifiers
(``gloss_lite.evaluate``):

- **the head** (``head_accuracy``, ``head_macro_f1``): ``argmax (A e_q + b)``, the CE head a
  ``GLossLoss`` with ``lam < 1`` trained (``gloss_lite.integrations.head.GLossHead``); skipped when the
  model has none;
- **label propagation** (``lpa_accuracy``, ``lpa_macro_f1``), given a labelled reference set:
  one graph of reference and evaluation texts, the reference labels visible, propagated to the
  evaluation texts, ``F_U = (I - T_UU)^-1 T_UL Y_L``, with the sigma the model was trained with
  (its ``GLossHead``) unless ``sigma`` is given. The graph is dense, ``(R + Q)^2`` entries:
  keep the reference set to a few thousand texts.

The primary metric (for ``load_best_model_at_end``) is ``lpa_macro_f1`` when there is a
reference set, else ``head_macro_f1``. Embeddings are computed with ``model.encode`` (eval
mode, no gradient); no mask is drawn, so evaluation uses no random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers.base.evaluation import SentenceEvaluator

from ..evaluate import classification_metrics, lpa_predict
from ..graph import SCHEMES, check_sigma
from .head import GLossHead

__all__ = ["gloss_head", "GLossEvaluator"]


def _texts_and_labels(texts, labels, what: str) -> tuple[list[str], torch.Tensor]:
    texts = list(texts)
    if not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError(f"{what} texts must be a non-empty sequence of strings")
    labels = torch.as_tensor(list(labels) if not isinstance(labels, torch.Tensor) else labels)
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{what} labels must be one integer class id per text, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}")
    if len(labels) != len(texts):
        raise ValueError(f"{what}: {len(texts)} texts but {len(labels)} labels")
    if labels.min() < 0:
        raise ValueError(f"{what} labels must be class ids >= 0, got {int(labels.min())}")
    return texts, labels.long()


def gloss_head(model) -> GLossHead | None:
    """The model's ``GLossHead`` (its last module), or None."""
    modules = list(getattr(model, "_modules", {}).values())
    return modules[-1] if modules and isinstance(modules[-1], GLossHead) else None


class GLossEvaluator(SentenceEvaluator):
    """Accuracy and macro-F1 of a G-Loss model, by its head and by label propagation (module docstring).

    Args:
        texts, labels: the evaluation set (integer class ids).
        reference_texts, reference_labels: the labelled reference set that propagation starts
            from (often the training set, or a stratified sample of it); None skips propagation.
        sigma: the kernel width for propagation; None reads the model's ``GLossHead``.
        scheme: the transition matrix, as in training (``"gloss"`` or ``"row"``).
        batch_size: texts embedded at a time.
        name: prefix of the metrics (``{name}_lpa_accuracy``).
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[int] | torch.Tensor, *,
                 reference_texts: Sequence[str] | None = None,
                 reference_labels: Sequence[int] | torch.Tensor | None = None, sigma: float | None = None,
                 scheme: str = "gloss", batch_size: int = 32, name: str = "") -> None:
        super().__init__()
        self.texts, self.labels = _texts_and_labels(texts, labels, "evaluation")
        if (reference_texts is None) != (reference_labels is None):
            raise ValueError("give both reference_texts and reference_labels, or neither")
        self.reference: tuple[list[str], torch.Tensor] | None = None
        if reference_texts is not None:
            self.reference = _texts_and_labels(reference_texts, reference_labels, "reference")
        if sigma is not None:
            check_sigma(sigma)
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.sigma, self.scheme, self.batch_size, self.name = sigma, scheme, batch_size, name
        self.primary_metric = "lpa_macro_f1" if self.reference is not None else "head_macro_f1"

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        head = gloss_head(model)
        if self.reference is None and (head is None or not head.classifier):
            raise ValueError("the model has no classification head (it was trained with lam = 1, or without "
                             "GLossLoss): give GLossEvaluator a reference set to classify by label propagation")
        embeddings = self._embed(model, self.texts)
        metrics: dict[str, float] = {}
        if head is not None and head.classifier:
            with torch.no_grad():
                predicted = head.logits(embeddings).argmax(dim=1)
            scores = classification_metrics(self.labels, predicted)
            metrics.update({f"head_{key}": value for key, value in scores.items()})
        if self.reference is not None:
            scores = self._lpa(model, head, embeddings, *self.reference)
            metrics.update({f"lpa_{key}": value for key, value in scores.items()})
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def _embed(self, model, texts: list[str]) -> torch.Tensor:
        return model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False)

    def _lpa(self, model, head: GLossHead | None, embeddings: torch.Tensor, reference_texts: list[str],
             reference_labels: torch.Tensor) -> dict[str, float]:
        sigma = self.sigma if self.sigma is not None else (head.sigma if head is not None else None)
        if sigma is None or not math.isfinite(sigma):
            raise ValueError("label propagation needs the kernel width the model was trained with: the model has "
                             "no estimated sigma (no GLossHead, or no training step yet); pass sigma=...")
        num_labels = head.num_labels if head is not None else int(max(reference_labels.max(), self.labels.max())) + 1
        predicted = lpa_predict(self._embed(model, reference_texts), reference_labels, embeddings, num_labels,
                                sigma=sigma, scheme=self.scheme)
        return classification_metrics(self.labels, predicted)

    def get_config_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "scheme": self.scheme,
                "reference_size": None if self.reference is None else len(self.reference[0])}
