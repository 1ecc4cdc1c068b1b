"""G-Loss in the Hugging Face ``Trainer``, for sequence-classification models.

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``.

``GLossTrainer(model=..., args=..., train_dataset=...)`` trains on
``(1 - lam) * CE(logits, y) + lam * G-Loss(E, y)``, with the names and defaults of
``gloss_lite.integrations.terms``. CE is computed on the model's logits, G-Loss on ``E``, the
attention-mask mean of a last hidden state (``gloss_lite.encoders.mean_pool``):

- an **encoder** (BERT, DistilBERT, RoBERTa, ELECTRA, DeBERTa-v2, ModernBERT): the last layer's
  token states;
- an **encoder-decoder** (BART, T5): the **encoder's** last hidden state
  (``encoder_last_hidden_state``), the representation of the input text; the decoder, whose
  end-of-sequence state the model's own head reads, is not pooled;
- a **decoder-only** model (GPT-2, Llama): the mean of its causal states, where token ``t`` has
  seen tokens ``1..t`` only, so early tokens carry less of the text; its own head reads the last
  token's state instead. The graph still sees every token's state, but weighs the start of a
  text more than a bidirectional encoder would.

**Gradient accumulation.** ``transformers.Trainer`` divides the loss of each micro-batch by the
number of micro-batches unless it counts the loss as already scaled, which it does whenever the
model's ``forward`` takes ``**kwargs``: it then trusts the model to divide by
``num_items_in_batch``. BERT's classification CE ignores it, and a per-batch G-Loss added to a
language model's loss is not divided either, so the usual glue (``outputs.loss + lam * G``)
steps on the *sum* of the micro-batch losses. ``GLossTrainer`` computes both terms itself, as
per-batch means, never passes ``num_items_in_batch`` and sets ``loss_is_scaled_for_ga = False``:
the accumulated gradient is that of the mean of the micro-batch losses.

**Saved and resumed.** The head is the model's own; sigma is written into the model's config
(``config.gloss_sigma``), so ``save_pretrained`` and every checkpoint carry it, and a resumed
run reads it back from the checkpoint instead of estimating it again. Masks come from torch's
global generator, which the Trainer checkpoints: a run stopped and resumed equals the
uninterrupted one.

**Evaluation** reports the same mixture as training, with a mask from a fresh generator seeded
by ``args.seed`` (the training masks are untouched); ``predict`` returns logits only.
"""

from __future__ import annotations

import json
import os
from functools import partial

import torch
import torch.nn.functional as F
from transformers import Trainer

from ..encoders import mean_pool
from ..losses import mix_losses
from ..training.sampling import ClassBalancedBatchSampler
from . import terms

__all__ = ["GLossTrainer", "pooled_embeddings"]

SIGMA_KEY = "gloss_sigma"


def pooled_embeddings(model, outputs, inputs: dict) -> torch.Tensor:
    """The attention-mask mean of the last hidden state G-Loss reads (the module docstring says which)."""
    if getattr(model.config, "is_encoder_decoder", False):
        hidden = outputs.encoder_last_hidden_state
    else:
        hidden = outputs.hidden_states[-1]
    mask = inputs.get("attention_mask")
    return mean_pool(hidden, torch.ones(hidden.shape[:2], device=hidden.device) if mask is None else mask)


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

    Every argument but these is ``Trainer``'s (see the module docstring):

    Args:
        num_labels: ``C``; None takes the model's ``config.num_labels``, a number must equal it.
        sigma: a number, or ``"sqrt"`` / ``"dicm"`` applied to the first training batch that can
            be masked; a model whose config holds ``gloss_sigma`` (trained before) keeps it.
        gamma, lam: as in ``GLossLoss``; ``lam`` in (0, 1].
        balanced_batches: draw training batches with ``ClassBalancedBatchSampler`` (two of every
            class in each batch; small classes repeat within an epoch). Off by default: the
            Trainer's shuffle, where a batch with no class of two gets a G-Loss of 0 and a warning.
        scheme, target, stratified, class_weights: as in ``gloss_lite.losses.GLoss``.
        gather_across_devices: one graph of every process's batch (``GLoss(gather=True)``).

    The logs show ``gloss`` and ``ce``, the weighted terms ``lam * G`` and ``(1 - lam) * CE``
    averaged over the micro-batches since the last log; they add up to ``loss``.
    """

    loss_is_scaled_for_ga = False  # each micro-batch's loss is a mean: the Trainer divides by the micro-batches

    def __init__(self, *args, num_labels: int | None = None, sigma: float | str = terms.DEFAULT_SIGMA,
                 gamma: float = terms.DEFAULT_GAMMA, lam: float = terms.DEFAULT_LAM, balanced_batches: bool = False,
                 scheme: str = "gloss", target: str = "nll", stratified: bool = True,
                 class_weights: torch.Tensor | None = None, gather_across_devices: bool = False, **kwargs) -> None:
        lam = terms.check_lam(lam)
        sigma_value = terms.check_sigma(sigma)
        for name, flag in (("balanced_batches", balanced_batches), ("gather_across_devices", gather_across_devices)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        super().__init__(*args, **kwargs)
        dataset = self.train_dataset
        if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError("train_dataset is empty: give GLossTrainer at least one labelled document per "
                             "class (two per class for G-Loss to hide one)")
        config = getattr(self.model, "config", None)
        model_labels = getattr(config, "num_labels", None)
        if num_labels is not None and terms.check_num_labels(num_labels) != model_labels:
            raise ValueError(
                f"the model has {model_labels} output labels but num_labels is {num_labels}; load it with "
                f"AutoModelForSequenceClassification.from_pretrained(..., num_labels={num_labels})"
            )
        self.num_labels = terms.check_num_labels(model_labels)
        self.lam = lam
        self.sigma_rule = sigma if isinstance(sigma, str) else None
        if sigma_value is not None:
            setattr(config, SIGMA_KEY, sigma_value)
        self.balanced_batches = balanced_batches
        self.gloss = terms.make_gloss(self.num_labels, gamma, scheme=scheme, target=target, stratified=stratified,
                                class_weights=class_weights, gather=gather_across_devices)
        self._terms = {"gloss": 0.0, "ce": 0.0, "count": 0}

    @property
    def sigma(self) -> float | None:
        """The kernel width in use (``model.config.gloss_sigma``); None until the first training batch."""
        return getattr(getattr(self.model, "config", None), SIGMA_KEY, None)

    def get_train_dataloader(self):
        if not self.balanced_batches or self.train_dataset is None:
            return super().get_train_dataloader()
        from torch.utils.data import DataLoader
        from transformers.trainer_utils import seed_worker

        dataset, collator = self.train_dataset, self.data_collator
        try:
            sampler = ClassBalancedBatchSampler(_dataset_labels(dataset), self._train_batch_size, seed=self.args.seed)
        except ValueError as error:
            raise ValueError(f"{error}; or train on the Trainer's shuffle: GLossTrainer(balanced_batches=False), "
                             "the default") from None
        if hasattr(dataset, "column_names"):
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
        labels = terms.labels_tensor(inputs.pop("labels", None))
        outputs = model(**inputs, output_hidden_states=True)
        labels = labels.to(outputs.logits.device)
        embeddings = pooled_embeddings(self.model, outputs, inputs).float()
        sigma = self.sigma
        if sigma is None and self.sigma_rule is not None and terms.can_mask(labels):
            sigma = terms.estimate_sigma(self.sigma_rule, embeddings, labels)
            if model.training:
                setattr(getattr(self.model, "config"), SIGMA_KEY, sigma)
        graph = terms.graph_term(self.gloss, embeddings, labels, sigma, training=model.training, seed=self.args.seed)
        ce = F.cross_entropy(outputs.logits.float(), labels)
        loss = mix_losses(ce, graph, self.lam)
        if model.training:
            self._terms["gloss"] += float(self.lam * graph.detach())
            self._terms["ce"] += float((1.0 - self.lam) * ce.detach())
            self._terms["count"] += 1
        return (loss, SequenceClassifierOutput(loss=loss, logits=outputs.logits)) if return_outputs else loss

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        config_file = os.path.join(resume_from_checkpoint, "config.json")
        if os.path.isfile(config_file):
            saved = json.loads(open(config_file, encoding="utf-8").read()).get(SIGMA_KEY)
            if saved is not None:
                setattr(getattr(self.model, "config"), SIGMA_KEY, float(saved))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._terms["count"]:
            count = self._terms["count"]
            logs = {**logs, "gloss": self._terms["gloss"] / count, "ce": self._terms["ce"] / count}
            self._terms = {"gloss": 0.0, "ce": 0.0, "count": 0}
        return super().log(logs, start_time)
