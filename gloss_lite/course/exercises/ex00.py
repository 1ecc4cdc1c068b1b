"""The exercises of notebook 00 · Overview: max pooling, cosine similarities, propagation when sigma is huge."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...lpa import propagate
from ..comparing import Exercise, same_outputs
from .inputs import embeddings, graph_case, randint

GRAPH = ("gaussian_affinity", "transition_matrix", "squared_distances", "pairwise_distances")
PROPAGATION = ("propagate", "g_loss", "GLoss", "lpa_predict")


# 00.1 · max pooling over the real tokens ----------------------------------------------------

def max_pooling_reference(token_embeddings, attention_mask):
    """Each dimension's largest value over a text's real tokens: padding is set to -inf first."""
    padding = attention_mask[..., None] == 0
    return token_embeddings.masked_fill(padding, float("-inf")).amax(dim=1)


def max_pooling_cases(generator):
    """Real token values mostly negative and padding vectors large, so that a max over the padding,
    or over the zeros a multiplied mask leaves there, gives another answer."""
    cases = []
    for _ in range(4):
        b, length, d = randint(2, 5, generator), randint(3, 9, generator), randint(3, 8, generator)
        hidden = torch.randn(b, length, d, generator=generator, dtype=torch.float64) - 2.0
        lengths = torch.randint(1, length, (b,), generator=generator)  # every text has padding
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        hidden = torch.where(mask[..., None].bool(), hidden, torch.full_like(hidden, 50.0))
        cases.append((f"{b} texts of up to {length} tokens, d={d}, real lengths {lengths.tolist()}, "
                      "padding vectors of 50s", (hidden, mask)))
    return cases


# 00.2 · the cosine-similarity matrix ---------------------------------------------------------

def cosine_reference(points):
    unit = F.normalize(points, dim=1)
    return unit @ unit.T


def cosine_cases(generator):
    cases = []
    for _ in range(4):
        n, d = randint(2, 9, generator), randint(2, 8, generator)
        scale = torch.rand(n, 1, generator=generator, dtype=torch.float64) * 5 + 0.1  # rows of any length
        cases.append((f"{n} x {d} embeddings with row norms between 0.1 and 5", (embeddings(n, d, generator) * scale,)))
    return cases


# 00.3 · label propagation when sigma is huge -------------------------------------------------

def wide_kernel_reference(labels, labeled_mask, num_classes):
    """``F_U`` on the complete graph of equal weights, the limit of the Gaussian graph as sigma grows."""
    n = len(labels)
    uniform = (torch.ones(n, n, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)) / (n - 1)
    return propagate(uniform, labels, labeled_mask, num_classes, teleport=0.0)[~labeled_mask]


def wide_kernel_cases(generator):
    cases = []
    for _ in range(4):
        _, labels, visible, num_classes, _, _ = graph_case(generator)
        cases.append((f"labels {labels.tolist()}, {int(visible.sum())} visible, C={num_classes}",
                      (labels, visible, num_classes)))
    return cases


EXERCISES = {
    "00.1": Exercise(
        "max pooling over the real tokens", "max_pooling",
        "padding must never win the maximum, not even against negative values: set the padding "
        "positions to -inf (masked_fill with attention_mask[..., None] == 0), then take the max over "
        "the token dimension",
        same_outputs(max_pooling_cases, max_pooling_reference),
        forbidden=("max_pooling_reference", "load_encoder"),
        face=("graph", "lpa", "masking", "losses", "sigma", "baselines")),
    "00.2": Exercise(
        "the cosine-similarity matrix", "cosine_similarity_matrix",
        "scale every row to length 1 first (torch.nn.functional.normalize(x, dim=1)); "
        "then one matrix product gives every cosine at once, 1 on the diagonal",
        same_outputs(cosine_cases, cosine_reference),
        forbidden=("cosine_reference", *GRAPH), face=("lpa", "masking")),
    "00.3": Exercise(
        "label propagation when sigma is huge", "wide_kernel_limit",
        "as sigma grows, every off-diagonal weight tends to 1: T becomes (J - I) / (n - 1). By symmetry all "
        "hidden rows of F_U are equal; put that into F_U = T_UU F_U + T_UL Y_L and solve for the common row",
        same_outputs(wide_kernel_cases, wide_kernel_reference, atol=1e-9),
        forbidden=(*GRAPH, *PROPAGATION, "wide_kernel_reference"), points=3, face=("masking",),
        more_hint="the common row is the share of each class among the visible labels: "
                  "one_hot(labels[labeled_mask], C).mean(0), repeated for every hidden node"),
}
