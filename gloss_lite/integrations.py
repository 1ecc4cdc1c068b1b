"""G-Loss in other people's training loops: sentence-transformers and the Hugging Face Trainer.

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``.

Both integrations train on the loss of the course, for a batch with embeddings ``E``, labels
``y`` and a stratified mask of visible labels (``gloss_lite.masking.split_mask``):

    loss = (1 - lam) * CE(head(E), y) + lam * G-Loss(E, y, mask; sigma)

``lam`` is the weight of **G-Loss** (the course's name): ``lam = 1`` is G-Loss alone and
``lam = 0.5`` an even mix with cross-entropy; ``lam`` must lie in ``(0, 1]``. G-Loss is
``gloss_lite.losses.GLoss`` (label propagation on the batch's graph, scored at the hidden
nodes); ``gamma`` is the share of visible labels, ``sigma`` the kernel width.

**sigma.** A number is used as it is. ``"sqrt"`` or ``"dicm"`` (``gloss_lite.sigma``) is
estimated once, on the model's embeddings of the first training batch that can be masked,
computed without gradient and in eval mode (no dropout), and then fixed for the rest of the
run (``loss.sigma`` / ``trainer.sigma`` hold it). ``fit`` estimates it on up to 2000 training
texts instead; one batch is what a loss inside someone else's loop gets to see.

**Batches G-Loss cannot mask.** The mask needs a class with two documents (one visible, one
hidden). ``ClassBalancedBatchSampler`` (``gloss_lite.training.sampling``) puts two of every class into
each batch and merges a too-small last batch into the one before, so that never happens; pass
``balanced_batch_sampler`` as sentence-transformers' ``batch_sampler`` argument, and
``GLossTrainer`` uses it by default. Where a batch still has no class of two (a last batch of
one document under a plain shuffle, or ``model.fit``, which keeps its own batches), its G-Loss
term is 0 for that step and an ``UnmaskableBatchWarning`` says so; the CE term, if any, still
trains.

sentence-transformers::

    model = load_sentence_transformer()                         # the offline MiniLM
    loss = GLossLoss(model, num_classes=2, sigma="sqrt", gamma=0.7, lam=1.0)
    args = SentenceTransformerTrainingArguments(output_dir, batch_sampler=balanced_batch_sampler)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(
        {"text": texts, "label": labels}), loss=loss).train()

``GLossLoss`` returns its terms as a dict, ``{"gloss": lam * G-Loss, "ce": (1 - lam) * CE}``
(``"ce"`` only when ``lam < 1``); ``SentenceTransformerTrainer`` adds them up for the backward
pass and logs each one beside ``loss``. The CE head (``loss.classifier``, ``nn.Linear(d, C)``)
lives in the loss, as in sentence-transformers' ``SoftmaxLoss``, and is trained with the model.

Hugging Face ``Trainer``, for a sequence-classification model::

    trainer = GLossTrainer(model=model, args=args, train_dataset=train, num_classes=2, lam=0.5)

adds G-Loss on the mean-pooled last hidden state (padding excluded, ``gloss_lite.encoders.mean_pool``)
to the cross-entropy of the model's logits.

**Gradient accumulation.** ``transformers.Trainer`` (5.23) divides the loss of each micro-batch
by the number of micro-batches, unless it counts the loss as already scaled: it does whenever the
model's ``forward`` takes ``**kwargs`` (``model_accepts_loss_kwargs``), trusting the model to sum
its loss over the whole accumulated batch and divide by ``num_items_in_batch``. BERT's
``forward(**kwargs)`` qualifies, yet its sequence-classification CE is a per-batch mean that
ignores ``num_items_in_batch``; a language model's loss does use it, and a per-batch G-Loss
added to it is again not divided. Either way the usual glue (``outputs.loss + lam * G-Loss`` in
a ``compute_loss``) steps on the *sum* of the micro-batch losses, or of their G-Loss terms:
doubled at two micro-batches. ``GLossTrainer`` computes both terms itself, as per-batch means,
never passes ``num_items_in_batch`` to the model and sets ``loss_is_scaled_for_ga = False``, so
the accumulated gradient is the gradient of the mean of the micro-batch losses, each micro-batch
one graph. (Micro-batches of unequal size weigh equally, not per document.)

**Evaluation.** ``evaluate`` and ``predict`` draw no masks and keep no hidden states: the
outputs are the logits, and ``eval_loss`` is the cross-entropy of the logits alone (G-Loss is
a training signal whose value depends on a random mask). ``GLossLoss`` in eval mode scores
G-Loss with a mask drawn from a fresh generator seeded by ``seed`` on every call, so the
training masks are untouched and an evaluation loss repeats.

``load_sentence_transformer(path)`` loads a ``SentenceTransformer`` from a ``pathlib.Path``
too: sentence-transformers 6.2 fails on a ``Path`` (``TypeError: argument of type 'PosixPath'
is not iterable``) and wants ``str(path)``.
"""

from __future__ import annotations

import math
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer

from .checks import check_int, class_ids
from .encoders import default_model_path, mean_pool
from .losses import GLoss, g_loss, mix_losses
from .masking import split_mask
from .sigma import check_sigma_setting
from .sigma import estimate as estimate_by_rule
from .training.sampling import ClassBalancedBatchSampler

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


def _check_lam(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or math.isnan(lam) or not 0.0 < lam <= 1.0:
        raise ValueError(
            f"lam is the weight of G-Loss in (1 - lam) * CE + lam * G-Loss and must lie in (0, 1], got {lam!r} "
            "(lam = 1 is G-Loss alone; lam = 0 would be plain cross-entropy, which needs no G-Loss)"
        )
    return float(lam)


def _check_sigma(sigma) -> float | None:
    """None for a rule ("sqrt", "dicm") still to be estimated, else the number as a float."""
    check_sigma_setting(sigma)
    return None if isinstance(sigma, str) else float(sigma)


def _check_num_classes(num_classes) -> int:
    check_int("num_classes", num_classes, minimum=2)
    return num_classes


def can_mask(labels: torch.Tensor) -> bool:
    """True when some class has two documents in ``labels``, so a mask can hide one and show one."""
    return len(labels) >= 2 and bool((torch.unique(labels, return_counts=True)[1] >= 2).any())


def _warn_unmaskable(labels: torch.Tensor) -> None:
    warnings.warn(
        f"a batch of {len(labels)} documents has no class with two documents, so G-Loss cannot hide a label: "
        "its G-Loss term is 0 for this step. Use class-balanced batches "
        "(gloss_lite.integrations.balanced_batch_sampler, or GLossTrainer(balanced_batches=True))",
        UnmaskableBatchWarning,
        stacklevel=3,
    )


def _pooled_last_hidden(outputs, inputs: dict) -> torch.Tensor:
    """The attention-mask mean of a model's last hidden state (all tokens when there is no mask)."""
    hidden = outputs.hidden_states[-1]
    mask = inputs.get("attention_mask")
    return mean_pool(hidden, torch.ones(hidden.shape[:2], device=hidden.device) if mask is None else mask)


def _labels_tensor(labels) -> torch.Tensor:
    if labels is None:
        raise ValueError("G-Loss needs the batch's labels: give the dataset a 'label' column of integer class ids")
    return class_ids(labels)


def load_sentence_transformer(name_or_path: str | os.PathLike | None = None, *, max_seq_length: int | None = None,
                              **kwargs):
    """A ``SentenceTransformer`` from a name, a folder (``str`` or ``pathlib.Path``), or None for the offline MiniLM.

    ``max_seq_length`` (tokens) is set when given; ``kwargs`` go to ``SentenceTransformer`` (e.g. ``device="cpu"``).
    """
    from sentence_transformers import SentenceTransformer

    source = default_model_path() if name_or_path is None else name_or_path
    if isinstance(source, os.PathLike):
        source = Path(source).expanduser()
        if not source.is_dir():
            raise ValueError(f"model folder {str(source)!r} does not exist; give a folder holding the model's files")
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
    into the one before) and reseeds itself per epoch (``set_epoch``).
    """
    columns = list(valid_label_columns or ["label"])
    column = next((name for name in columns if name in dataset.column_names), None)
    if column is None:
        raise ValueError(
            f"class-balanced batches need a label column ({' or '.join(columns)}); the dataset has "
            f"{dataset.column_names}"
        )
    return ClassBalancedBatchSampler(dataset[column], batch_size, seed=seed)


class GLossLoss(nn.Module):
    """G-Loss (mixed with CE when ``lam < 1``) as a sentence-transformers loss; see the module docstring.

    ``loss = (1 - lam) * CE(classifier(E), y) + lam * G-Loss(E, y)`` on the model's
    ``sentence_embedding`` ``E`` of the batch's single text column. Note the course's ``lam``
    weighs **G-Loss**: ``lam = 1.0`` (the default) is G-Loss alone, with no head.

    Args:
        model: the ``SentenceTransformer`` to train.
        num_classes: ``C``; labels are integer class ids in ``[0, C)``.
        sigma: a number, or ``"sqrt"`` / ``"dicm"``, estimated on the first training batch
            (eval mode, no gradient) and then fixed (``self.sigma``).
        gamma: share of each batch's labels kept visible, in (0, 1).
        lam: weight of G-Loss, in (0, 1]; with ``lam < 1`` a linear CE head
            ``self.classifier`` (``d -> C``) is trained inside the loss.
        scheme, target, stratified, class_weights: as in ``gloss_lite.losses.GLoss``.
        seed: seeds the training masks, and the fresh generator of every evaluation mask.

    ``forward(sentence_features, labels)`` returns ``{"gloss": lam * G, "ce": (1 - lam) * CE}``
    (no ``"ce"`` when ``lam = 1``), which the trainer adds up; ``self.gloss.last_mask`` is the last
    training mask. A batch with no class of two documents gets a G-Loss term of 0 and an
    ``UnmaskableBatchWarning``.
    """

    def __init__(self, model, num_classes: int, sigma: float | str = "sqrt", gamma: float = 0.7, lam: float = 1.0,
                 *, scheme: str = "gloss", target: str = "nll", stratified: bool = True,
                 class_weights: torch.Tensor | None = None, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.num_classes = _check_num_classes(num_classes)
        self.lam = _check_lam(lam)
        self.sigma_rule = sigma if isinstance(sigma, str) else None
        self.sigma = _check_sigma(sigma)
        self.seed = seed
        self.gloss = GLoss(num_classes, self.sigma or 1.0, gamma, scheme=scheme, target=target,
                           class_weights=class_weights, stratified=stratified, seed=seed)
        dimension = model.get_embedding_dimension()
        self.classifier = nn.Linear(dimension, num_classes, device=model.device) if self.lam < 1 else None

    def forward(self, sentence_features, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(sentence_features) != 1:
            raise ValueError(
                f"GLossLoss takes one text column and a label column, got {len(sentence_features)} text columns; "
                "keep only the text column and 'label' in the dataset"
            )
        features = sentence_features[0]
        labels = _labels_tensor(labels)
        sigma = self.sigma
        if sigma is None and can_mask(labels):
            sigma = self.estimate_sigma(dict(features), labels)
            if self.model.training:  # fixed from the first training batch on
                self.sigma = self.gloss.sigma = sigma
        embeddings = self.model(features)["sentence_embedding"]
        return self.compute_loss_from_embeddings(embeddings, labels, sigma=sigma)

    def estimate_sigma(self, features: dict, labels: torch.Tensor) -> float:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                embeddings = self.model(features)["sentence_embedding"]
        finally:
            self.model.train(was_training)
        return estimate_by_rule(self.sigma_rule, embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: torch.Tensor, labels: torch.Tensor,
                                     sigma: float | None = None) -> dict[str, torch.Tensor]:
        """The weighted terms for given embeddings (``n x d``) and labels (``sigma``: default ``self.sigma``)."""
        labels = labels.to(embeddings.device)
        sigma = self.sigma if sigma is None else sigma
        if sigma is None and can_mask(labels):
            sigma = estimate_by_rule(self.sigma_rule, embeddings, labels)
        if not can_mask(labels):
            _warn_unmaskable(labels)
            graph = embeddings.sum() * 0.0  # a zero that keeps the graph, so backward still runs
        elif self.model.training:
            self.gloss.sigma = sigma
            graph = self.gloss(embeddings, labels)
        else:  # a fresh, seeded mask: the training masks stay untouched and evaluation repeats
            mask = split_mask(labels, self.gloss.gamma, generator=torch.Generator().manual_seed(self.seed),
                              stratified=self.gloss.stratified)
            graph = g_loss(embeddings, labels, mask, sigma=sigma,
                           num_classes=self.num_classes, class_weights=self.gloss.class_weights,
                           scheme=self.gloss.scheme, target=self.gloss.target)
        terms = {"gloss": self.lam * graph}
        if self.classifier is not None:
            logits = self.classifier(embeddings.to(self.classifier.weight.dtype))
            terms["ce"] = (1.0 - self.lam) * F.cross_entropy(logits, labels)
        return terms

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "sigma": self.sigma_rule if self.sigma_rule and self.sigma is None else self.sigma,
            "sigma_rule": self.sigma_rule,
            "gamma": self.gloss.gamma,
            "lam": self.lam,
            "scheme": self.gloss.scheme,
            "target": self.gloss.target,
            "stratified": self.gloss.stratified,
            "seed": self.seed,
        }

    @property
    def citation(self) -> str:
        return CITATION


def _is_hf_dataset(dataset) -> bool:
    try:
        import datasets
    except ImportError:  # pragma: no cover - the `integrations` extra installs it
        return False
    return isinstance(dataset, datasets.Dataset)


def _dataset_labels(dataset) -> list[int]:
    """The class id of every training example: a ``labels``/``label`` column, or the items' ``labels`` key."""
    names = getattr(dataset, "column_names", None)
    if names is not None:
        for name in ("labels", "label"):
            if name in names:
                return list(dataset[name])
        raise ValueError(f"class-balanced batches need a 'labels' or 'label' column; the dataset has {names}")
    labels = []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, dict) or ("labels" not in item and "label" not in item):
            raise ValueError("class-balanced batches need each training item to be a dict with a 'labels' key")
        labels.append(int(torch.as_tensor(item.get("labels", item.get("label")))))
    return labels


class GLossTrainer(Trainer):
    """``transformers.Trainer`` for sequence classification with ``(1 - lam) * CE + lam * G-Loss``.

    ``GLossTrainer(model=..., args=..., train_dataset=..., num_classes=C, sigma="sqrt",
    gamma=0.7, lam=0.5, balanced_batches=True)``: every other argument is ``Trainer``'s. G-Loss
    runs on the attention-mask mean-pooled last hidden state; CE on the model's logits. See the
    module docstring for gradient accumulation (correct: each micro-batch's loss is its own mean
    and the Trainer averages them) and evaluation (logits only, CE only, no masks drawn).

    Args:
        num_classes: ``C``; the model's ``config.num_labels`` must equal it.
        sigma: a number, or ``"sqrt"`` / ``"dicm"`` estimated on the first training batch.
        gamma, lam: as in ``GLossLoss``; ``lam`` in (0, 1], 0.5 by default.
        balanced_batches: draw training batches with ``ClassBalancedBatchSampler`` (default
            True: every batch can be masked and scores every class); False keeps ``Trainer``'s
            shuffle, where a batch with no class of two gets a G-Loss of 0 and a warning.
        scheme, target, stratified, class_weights: as in ``gloss_lite.losses.GLoss``.
        gloss_seed: seeds the masks (default: ``args.seed``).

    The logs show ``gloss`` and ``ce``, the weighted terms ``lam * G`` and ``(1 - lam) * CE``
    averaged over the micro-batches since the last log; they add up to ``loss``.
    """

    loss_is_scaled_for_ga = False  # each micro-batch's loss is a mean: the Trainer divides by the micro-batches

    def __init__(self, *args, num_classes: int, sigma: float | str = "sqrt", gamma: float = 0.7, lam: float = 0.5,
                 balanced_batches: bool = True, scheme: str = "gloss", target: str = "nll", stratified: bool = True,
                 class_weights: torch.Tensor | None = None, gloss_seed: int | None = None, **kwargs) -> None:
        num_classes = _check_num_classes(num_classes)
        lam = _check_lam(lam)
        sigma_value = _check_sigma(sigma)
        if not isinstance(balanced_batches, bool):
            raise ValueError(f"balanced_batches must be True or False, got {balanced_batches!r}")
        super().__init__(*args, **kwargs)
        num_labels = getattr(getattr(self.model, "config", None), "num_labels", None)
        if num_labels != num_classes:
            raise ValueError(
                f"the model has {num_labels} output labels but num_classes is {num_classes}; load it with "
                f"AutoModelForSequenceClassification.from_pretrained(..., num_labels={num_classes})"
            )
        self.num_classes = num_classes
        self.lam = lam
        self.sigma_rule = sigma if isinstance(sigma, str) else None
        self.sigma = sigma_value
        self.balanced_batches = balanced_batches
        seed = self.args.seed if gloss_seed is None else gloss_seed
        self.gloss = GLoss(num_classes, sigma_value or 1.0, gamma, scheme=scheme, target=target,
                           class_weights=class_weights, stratified=stratified, seed=seed)
        self._terms = {"gloss": 0.0, "ce": 0.0, "count": 0}

    def get_train_dataloader(self):
        if not self.balanced_batches or self.train_dataset is None:
            return super().get_train_dataloader()
        from torch.utils.data import DataLoader
        from transformers.trainer_utils import seed_worker

        dataset, collator = self.train_dataset, self.data_collator
        sampler = ClassBalancedBatchSampler(_dataset_labels(dataset), self._train_batch_size, seed=self.args.seed)
        if _is_hf_dataset(dataset):
            dataset = self._remove_unused_columns(dataset, description="Training")
        else:
            collator = self._get_collator_with_removed_columns(collator, description="Training")
        loader = DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collator, num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            worker_init_fn=partial(seed_worker, num_workers=self.args.dataloader_num_workers,
                                   rank=self.args.process_index),
        )
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs = dict(inputs)
        labels = _labels_tensor(inputs.pop("labels", None))
        if not model.training:  # evaluation and prediction: CE of the logits, no mask, no hidden states
            logits = model(**inputs, output_hidden_states=False).logits
            loss = F.cross_entropy(logits.float(), labels.to(logits.device))
            return (loss, SequenceClassifierOutput(logits=logits)) if return_outputs else loss
        labels = labels.to(self.args.device)
        if self.sigma is None and can_mask(labels):
            self.sigma = self.gloss.sigma = self.estimate_sigma(model, inputs, labels)
        outputs = model(**inputs, output_hidden_states=True)
        embeddings = _pooled_last_hidden(outputs, inputs)
        ce = F.cross_entropy(outputs.logits.float(), labels)
        if can_mask(labels):
            graph = self.gloss(embeddings.float(), labels)
        else:
            _warn_unmaskable(labels)
            graph = embeddings.sum() * 0.0
        loss = mix_losses(ce, graph, self.lam)
        self._terms["gloss"] += float(self.lam * graph.detach())
        self._terms["ce"] += float((1.0 - self.lam) * ce.detach())
        self._terms["count"] += 1
        return (loss, SequenceClassifierOutput(loss=loss, logits=outputs.logits)) if return_outputs else loss

    def estimate_sigma(self, model, inputs: dict, labels: torch.Tensor) -> float:
        model.eval()
        try:
            with torch.no_grad():
                embeddings = _pooled_last_hidden(model(**inputs, output_hidden_states=True), inputs)
        finally:
            model.train()
        return estimate_by_rule(self.sigma_rule, embeddings, labels)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._terms["count"]:
            count = self._terms["count"]
            logs = {**logs, "gloss": self._terms["gloss"] / count, "ce": self._terms["ce"] / count}
            self._terms = {"gloss": 0.0, "ce": 0.0, "count": 0}
        return super().log(logs, start_time)
