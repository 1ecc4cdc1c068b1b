"""What G-Loss training learns beside the encoder, kept inside a sentence-transformers model.

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``.

A model trained with ``gloss_lite.integrations.GLossLoss`` needs two more things than its
encoder to classify:

- **sigma**, the kernel width of ``W_ij = exp(-||e_i - e_j||^2 / (2 sigma^2))`` it was trained
  with: label propagation at inference (``gloss_lite.evaluate.lpa_predict``) must use the same
  graph;
- with ``lam < 1``, **the cross-entropy head** ``logits = A e + b`` (``d -> C``).

``GLossHead`` holds both as an ordinary module at the end of the ``SentenceTransformer``, so
every ``save_pretrained`` (the trainer's checkpoints included) writes them into the model's
folder (``N_GLossHead/config.json`` and ``model.safetensors``) and every load restores them;
sentence-transformers' resume reloads the checkpoint's weights, sigma and head among them.
Its ``forward`` passes the features on unchanged: ``encode`` gives the same embeddings as
without it. ``logits(embeddings)`` applies the head.

sigma is a buffer (float32 like the weights, NaN until the loss has estimated it), so it
travels with the weights and the loss trains with the value it holds; ``config.json`` repeats it
for readers.

Loading a saved model imports this class, which sentence-transformers (6.0 on) allows for a
class outside its own package only with ``trust_remote_code=True``:
``gloss_lite.integrations.load_sentence_transformer`` passes it when the folder's
``modules.json`` names this class and no other class outside sentence-transformers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from sentence_transformers.base.modules import Module
from torch import nn

__all__ = ["GLossHead"]


class GLossHead(Module):
    """sigma and the optional CE head of a G-Loss model, saved and loaded with it (module docstring).

    Args:
        in_features: ``d``, the embedding dimension.
        num_labels: ``C``, the number of classes.
        classifier: hold a linear head ``d -> C`` (the loss creates it when ``lam < 1``).
        sigma: the kernel width, or None while it is still to be estimated.
        sigma_rule: ``"sqrt"``, ``"dicm"`` or None (a given number); kept for the record.
    """

    config_keys = ["in_features", "num_labels", "classifier", "sigma", "sigma_rule"]

    def __init__(self, in_features: int, num_labels: int, classifier: bool = True, sigma: float | None = None,
                 sigma_rule: str | None = None) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.num_labels = int(num_labels)
        self.sigma_rule = sigma_rule
        self.linear = nn.Linear(self.in_features, self.num_labels) if classifier else None
        self.register_buffer("sigma_buffer", torch.tensor(math.nan if sigma is None else float(sigma),
                                                          dtype=torch.float32))

    @property
    def classifier(self) -> bool:
        return self.linear is not None

    @property
    def sigma(self) -> float | None:
        """The kernel width the model was trained with; None until it is estimated."""
        value = float(self.sigma_buffer)
        return None if math.isnan(value) else value

    @sigma.setter
    def sigma(self, value: float) -> None:
        self.sigma_buffer.fill_(float(value))

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        return features

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``A e + b`` for ``n x d`` embeddings; a ``ValueError`` when the model has no head."""
        if self.linear is None:
            raise ValueError("this model was trained with lam = 1 (G-Loss alone) and has no classification head; "
                             "classify by label propagation (GLossEvaluator with a reference set)")
        if embeddings.shape[-1] != self.in_features:
            raise ValueError(f"the head reads {self.in_features}-dimensional embeddings, got {embeddings.shape[-1]} "
                             "(a truncated embedding, as MatryoshkaLoss makes, cannot feed it)")
        return self.linear(embeddings.to(self.linear.weight.dtype))

    def get_embedding_dimension(self) -> int:
        return self.in_features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             init_defaults: dict[str, Any] | None = None, **kwargs) -> "GLossHead":
        config = cls.load_config(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                                 revision=revision, local_files_only=local_files_only)
        module = cls(**{key: config[key] for key in cls.config_keys if key in config})
        cls.load_torch_weights(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                               revision=revision, local_files_only=local_files_only, model=module)
        return module
