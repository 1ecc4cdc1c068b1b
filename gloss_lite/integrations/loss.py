"""G-Loss as a sentence-transformers loss: ``GLossLoss``, and the helpers to train with it.

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``; the package docstring
(``gloss_lite.integrations``) gives the overview. ``GLossLoss`` returns one tensor (the library's
wrappers compose with it) or, with ``return_terms=True``, its weighted terms; it keeps sigma and
the CE head in a ``GLossHead`` appended to the model (``gloss_lite.integrations.head``).
``gather_across_devices`` and ``mini_batch_size`` make the graph span every process, or exceed
memory (sentence-transformers' ``CachedLossMixin``, the pattern of ``gloss_lite.training.cached``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from torch import nn

from .. import collectives
from ..encoders import default_model_path
from ..training.cached import check_chunk_size
from ..training.sampling import ClassBalancedBatchSampler
from .evaluator import gloss_head
from .head import GLossHead
from .terms import (
    CITATION,
    DEFAULT_GAMMA,
    DEFAULT_LAM,
    DEFAULT_SIGMA,
    can_mask,
    check_lam,
    check_num_labels,
    check_sigma,
    estimate_sigma,
    graph_term,
    labels_tensor,
    make_gloss,
    weighted_terms,
)

__all__ = ["balanced_batch_sampler", "GLossLoss", "load_sentence_transformer"]


def _trusted_modules(folder: Path) -> bool:
    """True when the saved model's only module classes outside sentence-transformers are this package's."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return False
    types = [entry.get("type", "") for entry in json.loads(modules.read_text(encoding="utf-8"))]
    outside = [name for name in types if not name.startswith("sentence_transformers.")]
    return bool(outside) and all(name.startswith("gloss_lite.") for name in outside)


def load_sentence_transformer(name_or_path: str | os.PathLike | None = None, *, max_seq_length: int | None = None,
                              **kwargs):
    """A ``SentenceTransformer`` from a name, a folder (``str`` or ``pathlib.Path``), or None for the offline MiniLM.

    A folder saved after G-Loss training holds a ``GLossHead``; it is loaded with
    ``trust_remote_code=True`` when that is its only class from outside sentence-transformers.
    ``max_seq_length`` (tokens) is set when given; ``kwargs`` go to ``SentenceTransformer``.
    """
    from sentence_transformers import SentenceTransformer

    source = default_model_path() if name_or_path is None else name_or_path
    if isinstance(source, os.PathLike):
        source = Path(source).expanduser()
        if not source.is_dir():
            raise ValueError(f"model folder {str(source)!r} does not exist; give a folder holding the model's files")
    if Path(os.fspath(source)).is_dir() and _trusted_modules(Path(os.fspath(source))):
        kwargs.setdefault("trust_remote_code", True)
    model = SentenceTransformer(os.fspath(source), **kwargs)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def balanced_batch_sampler(dataset, batch_size: int, drop_last: bool = False, valid_label_columns=None,
                           generator=None, seed: int = 0) -> ClassBalancedBatchSampler:
    """``ClassBalancedBatchSampler`` for ``SentenceTransformerTrainingArguments(batch_sampler=...)``.

    sentence-transformers calls it with its own arguments: the labels come from the first of
    ``valid_label_columns`` the dataset has (``"label"``), the seed is the trainer's; the
    sampler never drops documents (``drop_last`` is ignored: a too-small last batch is merged
    into the one before) and reseeds itself per epoch (``set_epoch``). Small classes are drawn
    more than once per epoch: it changes the training distribution, which is why it is not the
    default. Without it, leave ``batch_sampler`` at its default.
    """
    columns = list(valid_label_columns or ["label"])
    column = next((name for name in columns if name in dataset.column_names), None)
    if column is None:
        raise ValueError(
            f"class-balanced batches need a label column ({' or '.join(columns)}); the dataset has "
            f"{dataset.column_names}"
        )
    try:
        return ClassBalancedBatchSampler(dataset[column], batch_size, seed=seed)
    except ValueError as error:
        raise ValueError(f"{error}; or train without class-balanced batches: leave batch_sampler at its "
                         "default in SentenceTransformerTrainingArguments") from None


def _attach_head(model, num_labels: int, classifier: bool, sigma: float | None, rule: str | None) -> GLossHead:
    """The model's ``GLossHead``, appended when it has none (see ``gloss_lite.integrations.head``)."""
    head = gloss_head(model)
    if head is None:
        head = GLossHead(model.get_embedding_dimension(), num_labels, classifier=classifier, sigma=sigma,
                         sigma_rule=rule).to(model.device)
        model.append(head)
        return head
    if head.num_labels != num_labels:
        raise ValueError(f"the model's GLossHead has {head.num_labels} labels but num_labels is {num_labels}; "
                         "load the base model without it to train on other classes")
    if classifier and not head.classifier:
        raise ValueError("the model was trained with lam = 1 and has no CE head; train it further with lam=1.0")
    if sigma is not None:
        head.sigma = sigma
    return head


class GLossLoss(CachedLossMixin, nn.Module):
    """G-Loss (mixed with CE when ``lam < 1``) as a sentence-transformers loss; see the module docstring.

    ``loss = (1 - lam) * CE(head(E), y) + lam * G-Loss(E, y)`` on the model's
    ``sentence_embedding`` ``E`` of the batch's single text column.

    Args:
        model: the ``SentenceTransformer`` to train; a ``GLossHead`` is appended to it (kept if
            it has one already, with its trained sigma).
        num_labels: ``C``; labels are integer class ids in ``[0, C)``.
        sigma: a number, or ``"sqrt"`` / ``"dicm"``, applied to the first training batch that can
            be masked and then fixed (``self.sigma``, saved in the ``GLossHead``).
        gamma: share of each batch's labels kept visible, in (0, 1).
        lam: weight of G-Loss, in (0, 1]; with ``lam < 1`` the ``GLossHead`` holds a linear CE head.
        scheme, target, stratified, class_weights: as in ``gloss_lite.losses.GLoss``.
        seed: seeds the fresh generator of every evaluation mask (training masks come from
            torch's global generator, which the trainer seeds and checkpoints).
        return_terms: return ``{"gloss": ..., "ce": ...}`` instead of their sum (logged term by term).
        gather_across_devices: one graph of every process's batch (``GLoss(gather=True)``).
        mini_batch_size: embed this many texts at a time, with cached embedding gradients.

    A batch with no class of two documents gets a G-Loss term of 0 and an ``UnmaskableBatchWarning``.
    """

    def __init__(self, model, num_labels: int, sigma: float | str = DEFAULT_SIGMA, gamma: float = DEFAULT_GAMMA,
                 lam: float = DEFAULT_LAM, *, scheme: str = "gloss", target: str = "nll", stratified: bool = True,
                 class_weights: torch.Tensor | None = None, seed: int = 0, return_terms: bool = False,
                 gather_across_devices: bool = False, mini_batch_size: int | None = None) -> None:
        nn.Module.__init__(self)
        self.num_labels = check_num_labels(num_labels)
        self.lam = check_lam(lam)
        value = check_sigma(sigma)
        self.sigma_rule = sigma if isinstance(sigma, str) else None
        for name, flag in (("return_terms", return_terms), ("gather_across_devices", gather_across_devices)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        if mini_batch_size is not None:
            check_chunk_size(mini_batch_size)
            if return_terms:
                raise ValueError("with mini_batch_size the loss is one cached tensor; use return_terms=False")
        self.mini_batch_size = mini_batch_size or 0
        self.uses_gradient_cache = mini_batch_size is not None
        self.return_terms = return_terms
        self.seed = seed
        self.model = model
        self.gloss = make_gloss(num_labels, gamma, scheme=scheme, target=target, stratified=stratified,
                                class_weights=class_weights, gather=gather_across_devices)
        self.head = _attach_head(model, num_labels, self.lam < 1, value, self.sigma_rule)

    @property
    def sigma(self) -> float | None:
        """The kernel width in use (the ``GLossHead``'s); None until the first training batch."""
        return self.head.sigma

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        sentence_features = list(sentence_features)
        if len(sentence_features) != 1:
            raise ValueError(
                f"GLossLoss takes one text column and a label column, got {len(sentence_features)} text columns; "
                "keep only the text column and 'label' in the dataset"
            )
        labels = labels_tensor(labels)
        if self.uses_gradient_cache:
            return self.forward_cached(sentence_features, labels)
        embeddings = self.model(sentence_features[0])["sentence_embedding"]
        terms = self.compute_loss_from_embeddings(embeddings, labels)
        return terms if self.return_terms else torch.stack(list(terms.values())).sum()

    def calculate_loss(self, reps: list[list[torch.Tensor]], labels: torch.Tensor | None = None, *,
                       with_backward: bool = False) -> torch.Tensor:
        """The cached step's loss on the mini-batches' embeddings (``CachedLossMixin``)."""
        terms = self.compute_loss_from_embeddings(torch.cat(reps[0]), labels_tensor(labels))
        loss = torch.stack(list(terms.values())).sum()
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def compute_loss_from_embeddings(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted terms for given embeddings (``n x d``) and labels; estimates sigma on the first batch."""
        labels = labels.to(embeddings.device)
        training = self.model.training
        sigma = self.head.sigma
        if sigma is None and self.sigma_rule is not None and self._maskable(labels):
            seen = self._every_rank(embeddings.detach())
            sigma = estimate_sigma(self.sigma_rule, seen, self._every_rank(labels))
            if training:  # fixed from the first training batch on
                self.head.sigma = sigma
                sigma = self.head.sigma
        graph = graph_term(self.gloss, embeddings, labels, sigma, training=training, seed=self.seed)
        logits = self.head.logits(embeddings) if self.head.classifier else None
        return weighted_terms(graph, logits, labels, self.lam)

    def _every_rank(self, local: torch.Tensor) -> torch.Tensor:
        return collectives.gather_labels(local) if self.gloss.gather else local

    def _maskable(self, labels: torch.Tensor) -> bool:
        return can_mask(self._every_rank(labels))

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "num_labels": self.num_labels,
            "sigma": self.sigma if self.sigma is not None else self.sigma_rule,
            "sigma_rule": self.sigma_rule,
            "gamma": self.gloss.gamma,
            "lam": self.lam,
            "scheme": self.gloss.scheme,
            "target": self.gloss.target,
            "stratified": self.gloss.stratified,
            "gather_across_devices": self.gloss.gather,
            "mini_batch_size": self.mini_batch_size or None,
        }

    @property
    def citation(self) -> str:
        return CITATION
