"""A small trainable model over frozen features, in the place of the encoder.

Taught in ``notebooks/07_reproducing_the_paper.ipynb`` (the frozen-encoder tier).

The encoder's embeddings ``e`` (``gloss_lite.reproduction.features``) stay fixed; only a residual
adapter and the head learn:

    a(e) = e + W_2 dropout(GELU(W_1 LayerNorm(e) + b_1)) + b_2,      logits = A a(e) + b

``W_2`` and ``b_2`` start at zero, so training starts from the encoder's own embeddings, as
fine-tuning starts from the pretrained encoder. Dropout (0.1, as in BERT and MiniLM) makes two
passes over a batch differ, which the authors' recipe relies on (G-Loss on a second pass).

``FeatureAdapter`` looks a text's features up by the text itself and offers what
``gloss_lite.training.fit`` asks of an encoder (``dim``, ``model``, ``embed``, ``forward(texts)``),
so the same training loop, recipes, early stopping and scoring serve the frozen setting and full
fine-tuning. This is not the paper's setting: the encoder's 22.7 M weights never move, the
adapter has ``2 d^2 + 4 d`` (about 0.3 M at ``d = 384``).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch

__all__ = ["ResidualAdapter", "FeatureAdapter"]


class ResidualAdapter(torch.nn.Module):
    """``e + W_2 dropout(GELU(W_1 LayerNorm(e) + b_1)) + b_2`` with ``W_2 = 0, b_2 = 0`` at the start."""

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = hidden or dim
        self.norm = torch.nn.LayerNorm(dim)
        self.down = torch.nn.Linear(dim, hidden)
        self.dropout = torch.nn.Dropout(dropout)
        self.up = torch.nn.Linear(hidden, dim)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.up(self.dropout(torch.nn.functional.gelu(self.down(self.norm(features)))))


class FeatureAdapter(torch.nn.Module):
    """Frozen features of known texts, then a ``ResidualAdapter``: an encoder for ``fit``.

    Args:
        texts: every text the model will be asked about (train, val and test).
        features: ``len(texts) x d``, the frozen embedding of each text (a text given twice must
            have one vector).
        seed: seeds the adapter's initial weights.
        hidden, dropout: the adapter's width (default ``d``) and dropout.
    """

    table: torch.Tensor  # a buffer (register_buffer): it moves with the module

    def __init__(self, texts: Sequence[str], features: torch.Tensor, *, seed: int = 0, hidden: int | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if features.dim() != 2 or len(features) != len(texts):
            raise ValueError(f"features must be a len(texts) x d matrix, got shape {tuple(features.shape)} "
                             f"for {len(texts)} texts")
        self.rows: dict[str, int] = {}  # a text -> its row of the table (its first occurrence)
        for row, text in enumerate(texts):
            self.rows.setdefault(text, row)
        self.register_buffer("table", features.float().contiguous(), persistent=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = ResidualAdapter(features.shape[1], hidden, dropout)
        self.name = "frozen features + residual adapter"

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    @property
    def device(self) -> torch.device:
        return self.table.device

    def lookup(self, texts: Sequence[str]) -> torch.Tensor:
        """The frozen features of ``texts``; ``KeyError`` naming a text that was not given."""
        try:
            rows = [self.rows[text] for text in texts]
        except KeyError as error:
            raise KeyError(f"no frozen features for the text {str(error)[:80]}; build the FeatureAdapter "
                           "from every split it will see") from None
        return self.table[torch.tensor(rows, dtype=torch.long, device=self.table.device)]

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model(self.lookup(texts))

    def pretokenized(self, texts: Sequence[str]):
        """The encoder's per-run tokenisation (``Encoder.pretokenized``): nothing to do, the features are a table."""
        return nullcontext()

    @torch.no_grad()
    def embed(self, texts: Sequence[str], *, batch_size: int = 4096, progress: bool = False) -> torch.Tensor:
        """The adapted features of ``texts`` without gradient, in eval mode (no dropout), on the CPU."""
        was_training = self.training
        self.eval()
        try:
            texts = list(texts)
            chunks = [self(texts[start:start + batch_size]).float().cpu() for start in range(0, len(texts), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(chunks) if chunks else torch.empty(0, self.dim)
