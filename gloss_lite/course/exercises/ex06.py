"""The exercises of notebook 06 · Comparing losses: supervised contrastive, batch-hard triplet, SupCon at
perfect collapse."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...baselines import SupConLoss, TripletLoss
from ..comparing import Exercise, same_outputs
from .inputs import choice, embeddings, labels_with_every_class, randint

SUPCON = ("SupConLoss", "NTXentLoss")
EVERYTHING_BUT_BASELINES = ("graph", "lpa", "masking", "losses", "sigma")


def metric_cases(generator, parameter: str, values: list[float]):
    cases = []
    for _ in range(4):
        num_classes = randint(2, 4, generator)
        n = randint(2 * num_classes + 1, 12, generator)
        labels = labels_with_every_class(n, num_classes, generator, at_least=2)
        value = choice(values, generator)
        cases.append((f"{n} x 5 embeddings, labels {labels.tolist()}, {parameter}={value}",
                      (embeddings(n, 5, generator), labels, value)))
    return cases


def supcon_reference(points, labels, temperature):
    return SupConLoss(temperature)(points, labels)


def batch_hard_reference(points, labels, margin):
    return TripletLoss(margin, "hard")(points, labels)


# 06.3 · supervised contrastive loss at perfect collapse --------------------------------------

def collapse_reference(labels, temperature):
    """SupCon of one-hot embeddings (every class on its own unit vector, the classes orthogonal), in
    float64 and averaged over every anchor. (pytorch-metric-learning's ``SupConLoss`` averages only
    over the anchors whose loss is not 0 in float32, which at a small temperature drops some.)"""
    unit = F.one_hot(labels).double()
    logits = unit @ unit.T / temperature
    itself = torch.eye(len(labels), dtype=torch.bool)
    positives = (labels[:, None] == labels[None, :]) & ~itself
    log_prob = logits - torch.logsumexp(logits.masked_fill(itself, float("-inf")), dim=1, keepdim=True)
    return (-(log_prob * positives).sum(1) / positives.sum(1)).mean()


def collapse_cases(generator):
    cases = []
    for _ in range(4):
        num_classes = randint(2, 5, generator)
        labels = labels_with_every_class(randint(2 * num_classes, 12, generator), num_classes, generator, at_least=2)
        temperature = choice([0.05, 0.1, 0.5, 1.0], generator)
        cases.append((f"labels {labels.tolist()}, temperature={temperature}", (labels, temperature)))
    return cases


EXERCISES = {
    "06.1": Exercise(
        "the supervised contrastive loss", "supervised_contrastive_loss",
        "cosine similarities s / temperature; per anchor i and positive p: "
        "-(s_ip / t - logsumexp over all a != i of s_ia / t); average per anchor, then over the anchors",
        same_outputs(lambda g: metric_cases(g, "temperature", [0.1, 0.2, 0.5]), supcon_reference,
                     atol=1e-5, rtol=1e-4),
        forbidden=(*SUPCON, "supcon_reference"), face=EVERYTHING_BUT_BASELINES,
        withheld=("pytorch_metric_learning",)),
    "06.2": Exercise(
        "the batch-hard triplet loss", "batch_hard_triplet_loss",
        "Euclidean distances between L2-normalised rows; per anchor, its farthest positive and its nearest "
        "negative: max(0, d_ap - d_an + margin); average over the anchors whose loss is > 0",
        same_outputs(lambda g: metric_cases(g, "margin", [0.1, 0.3, 0.5, 1.0]), batch_hard_reference,
                     atol=1e-5, rtol=1e-4),
        forbidden=("TripletLoss", "TripletMarginLoss", "BatchHardMiner", "triplet_margin_loss",
                   "TripletMarginWithDistanceLoss", "batch_hard_reference"), face=EVERYTHING_BUT_BASELINES,
        withheld=("pytorch_metric_learning", "torch.nn.functional.triplet_margin_loss", "torch.triplet_margin_loss"),
        more_hint="mask the distance matrix: -inf off the positives before max, +inf on the same class before min"),
    "06.3": Exercise(
        "supervised contrastive loss at perfect collapse", "supcon_at_collapse",
        "every class sits on one unit vector and the classes are orthogonal: an anchor of a class of m "
        "members sees m - 1 similarities of 1 and n - m of 0; write its loss from the formula, then average",
        same_outputs(collapse_cases, collapse_reference, atol=1e-5, rtol=1e-4),
        forbidden=(*SUPCON, "collapse_reference"), points=3, face=EVERYTHING_BUT_BASELINES,
        withheld=("pytorch_metric_learning",),
        more_hint="an anchor of a class of size m pays -1/t + log((m - 1) e^(1/t) + (n - m)); average over anchors"),
}
