"""The losses the paper compares G-Loss with: supervised contrastive, triplet, contrastive.

Taught in ``notebooks/06_comparing_losses.ipynb``. Each is a module with
``forward(embeddings, labels)``, like ``gloss_lite.losses.GLoss``, wrapping
pytorch-metric-learning's implementation. All of them L2-normalise the embeddings first (cosine
geometry), as G-Loss does; ``CosineMSELoss`` is the authors' "contrastive" baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ContrastiveLoss", "CosineMSELoss", "SupConLoss", "TripletLoss"]


class SupConLoss(torch.nn.Module):
    """Supervised contrastive loss (Khosla et al., 2020).

    For each anchor ``i`` with positives ``P(i)`` (same label, ``p != i``), ``s_ij`` the cosine
    similarity and ``tau`` the temperature,
    ``l_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / tau) / sum_{a != i} exp(s_ia / tau) )``.

    - ``base_temperature=None`` (the course's form, pytorch-metric-learning's): ``l_i`` is 0
      for an anchor without a positive, and the loss is the mean of ``l_i`` over the anchors
      with ``l_i > 0`` (its ``AvgNonZeroReducer``); 0 if the batch has no positive or no
      negative pair. An anchor with ``k >= 2`` positives pays at least ``log k``, so this is the
      mean over the anchors that have a positive except where an anchor's only positive takes
      its whole softmax, to float precision: that anchor is left out of the mean.
    - ``base_temperature=b`` (the authors' form, from the SupCon reference code they use):
      ``(tau / b) * l_i``, averaged over **all** anchors, an anchor without a positive counting
      as 0. The authors keep ``b = 0.07``, so a temperature of 0.1 scales the loss by 1.43.
    """

    def __init__(self, temperature: float = 0.1, base_temperature: float | None = None) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if base_temperature is not None and not base_temperature > 0:
            raise ValueError(f"base_temperature must be > 0 or None, got {base_temperature!r}")
        from pytorch_metric_learning.losses import SupConLoss as _SupCon

        self.temperature = temperature
        self.base_temperature = base_temperature
        self.loss = _SupCon(temperature=temperature)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.base_temperature is None:
            return self.loss(embeddings.float(), labels)
        unit = F.normalize(embeddings.float(), dim=1)
        logits = unit @ unit.T / self.temperature
        not_self = ~torch.eye(len(unit), dtype=torch.bool, device=unit.device)
        log_prob = logits - torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), dim=1, keepdim=True)
        positive = (labels[:, None] == labels[None, :]) & not_self
        per_anchor = (log_prob * positive).sum(dim=1) / positive.sum(dim=1).clamp_min(1)
        return -(self.temperature / self.base_temperature) * per_anchor.mean()


class TripletLoss(torch.nn.Module):
    """Triplet margin loss ``max(0, d(a, p) - d(a, n) + margin)`` with Euclidean ``d``.

    ``mining="all"`` (batch-all) averages over every valid triplet of the batch whose loss is
    positive; ``mining="hard"`` (batch-hard) keeps, per anchor, the farthest positive and the
    nearest negative. Both are from Hermans, Beyer and Leibe (2017).

    ``normalize=True`` (the course's form) measures ``d`` between L2-normalised embeddings, so a
    margin of 0.1 is on the scale of distances in [0, 2]; ``normalize=False`` with ``margin=5``
    is the authors' form, on the raw embeddings.
    """

    MININGS = ("all", "hard")

    def __init__(self, margin: float = 0.1, mining: str = "all", normalize: bool = True) -> None:
        super().__init__()
        if mining not in self.MININGS:
            raise ValueError(f"mining must be one of {self.MININGS}, got {mining!r}")
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin!r}")
        from pytorch_metric_learning.distances import LpDistance
        from pytorch_metric_learning.losses import TripletMarginLoss
        from pytorch_metric_learning.miners import BatchHardMiner

        self.mining = mining
        self.normalize = normalize
        distance = LpDistance(normalize_embeddings=normalize)
        self.loss = TripletMarginLoss(margin=margin, distance=distance)
        self.miner = BatchHardMiner(distance=distance) if mining == "hard" else None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        if self.miner is None:
            return self.loss(embeddings, labels)
        return self.loss(embeddings, labels, self.miner(embeddings, labels))


class ContrastiveLoss(torch.nn.Module):
    """Pairwise contrastive loss on L2-normalised embeddings, in pytorch-metric-learning's form.

    Positive pairs pay ``d``, negative pairs ``max(0, margin - d)``; each part is averaged over
    its pairs with a non-zero loss and the two parts are added. (Hadsell, Chopra and LeCun, 2006,
    square both terms; this form does not.)
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin!r}")
        from pytorch_metric_learning.losses import ContrastiveLoss as _Contrastive

        self.loss = _Contrastive(pos_margin=0.0, neg_margin=margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings.float(), labels)


class CosineMSELoss(torch.nn.Module):
    """The authors' "contrastive" baseline: how far cosine similarity is from "same label".

    ``mean_{i<j} (cos(e_i, e_j) - [y_i = y_j])^2`` over every pair of the batch: same-class pairs
    are pulled towards cosine 1, other pairs towards cosine 0 (orthogonal, not opposite).
    """

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(embeddings.float(), dim=1)
        i, j = torch.triu_indices(len(unit), len(unit), offset=1, device=unit.device)
        cosine = (unit[i] * unit[j]).sum(dim=1)
        return F.mse_loss(cosine, (labels[i] == labels[j]).to(cosine.dtype))

