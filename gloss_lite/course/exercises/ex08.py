"""The exercises of notebook 08 · The graph beyond one batch: the cached gradient, the cross-entropy scale
under DDP, a class-balanced batch."""

from __future__ import annotations

import torch

from ..calls import coupling_loss
from ..comparing import Exercise, Mismatch, ask, compare, describe
from .inputs import embeddings, labels_with_every_class, randint

METHOD = ("graph", "lpa", "masking", "losses", "sigma", "baselines")


# 08.1 · the cached gradient ------------------------------------------------------------------

def check_cached_gradient(student, generator) -> int:
    """dLoss/dW of a linear "encoder" against one backward pass; the loss must see cached embeddings."""
    cases = 0
    for number in range(1, 5):
        n, d_in, d = randint(5, 13, generator), randint(2, 5, generator), randint(2, 4, generator)
        chunk_size = randint(1, n, generator) if number > 1 else 1
        weight = embeddings(d_in, d, generator)
        inputs = embeddings(n, d_in, generator)
        loss_weights = embeddings(n, d, generator)
        where = f"input {number} of 4: X {n} x {d_in}, W {d_in} x {d}, chunk_size={chunk_size}"
        leaf = weight.clone().requires_grad_()
        (expected,) = torch.autograd.grad(coupling_loss(loss_weights)(inputs @ leaf), leaf)
        yours = ask(student, where, weight, inputs, loss_weights, chunk_size, call="cached_gradient")
        calls = yours["calls"]
        if len(calls) != 1 or calls[0][0] != [n, d]:
            raise Mismatch(f"call loss_of_embeddings once, on all {n} cached embeddings ({n} x {d}); it was "
                           f"called {len(calls)} time(s) with shapes {[tuple(shape) for shape, _ in calls]}"
                           f"\n  on {where}")
        if calls[0][1] is not True:
            raise Mismatch(f"loss_of_embeddings got embeddings that carry the encoder's graph (or no gradient): "
                           f"step 1 embeds under torch.no_grad(), step 2 calls the loss on a leaf that requires "
                           f"grad, so the cached step never holds every chunk's graph at once\n  on {where}")
        compare(yours["value"], expected, where, atol=1e-9)
        cases += 1
    return cases


# 08.2 · the cross-entropy scale under DDP ----------------------------------------------------

def check_ce_scales(student, generator) -> int:
    """Each rank's factor c_r such that DDP's average of c_r * (local mean) is the global-batch mean."""
    cases = [[4, 4], [5, 7], [9]]
    for _ in range(2):
        cases.append([randint(1, 9, generator) for _ in range(randint(2, 5, generator))])
    for number, sizes in enumerate(cases, start=1):
        where = f"input {number} of {len(cases)}: local batch sizes {sizes}"
        yours = ask(student, where, list(sizes))
        try:
            factors = [float(value) for value in yours]
        except (TypeError, ValueError, RuntimeError):
            raise Mismatch(f"expected a list of {len(sizes)} numbers, got {describe(yours)}\n  on {where}") from None
        if len(factors) != len(sizes):
            raise Mismatch(f"expected one factor per rank ({len(sizes)}), got {len(factors)}\n  on {where}")
        for _ in range(3):  # random per-document losses: DDP averages the ranks' scaled means
            losses = [torch.rand(size, generator=generator, dtype=torch.float64) for size in sizes]
            ddp = sum(c * float(part.mean()) for c, part in zip(factors, losses)) / len(sizes)
            whole = float(torch.cat(losses).mean())
            if not abs(ddp - whole) <= 1e-9:
                raise Mismatch(f"DDP's average of your scaled local means is {ddp:.6g}, the mean over the global "
                               f"batch is {whole:.6g} (your factors {[round(c, 4) for c in factors]})\n  on {where}")
    return len(cases)


# 08.3 · a class-balanced batch ---------------------------------------------------------------

def batch_indices(batch, batch_size: int, n: int, where: str) -> list[int]:
    try:
        indices = [int(i) for i in batch]
    except (TypeError, ValueError, RuntimeError):
        raise Mismatch(f"expected a list of {batch_size} indices, got {describe(batch)}\n  on {where}") from None
    if len(indices) != batch_size or len(set(indices)) != batch_size or not all(0 <= i < n for i in indices):
        raise Mismatch(f"expected {batch_size} distinct indices in 0..{n - 1}, got {indices}\n  on {where}")
    return indices


def check_balanced_batch(student, generator) -> int:
    """A random batch of distinct documents holding two of every class, drawn from ``generator``."""
    tried = 0
    for number in range(1, 5):
        num_classes = randint(2, 4, generator)
        n = randint(2 * num_classes + 2, 24, generator)
        labels = labels_with_every_class(n, num_classes, generator, at_least=2)
        batch_size = randint(2 * num_classes, n - 1, generator)
        sizes = torch.bincount(labels, minlength=num_classes).tolist()
        where = f"input {number} of 4: labels with class sizes {sizes}, batch_size={batch_size}"
        seen, batches = torch.zeros(n, dtype=torch.bool), set()
        for _ in range(200):
            seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
            indices = batch_indices(ask(student, where, labels, batch_size, torch.Generator().manual_seed(seed)),
                                    batch_size, n, where)
            counts = torch.bincount(labels[indices], minlength=num_classes)
            if int(counts.min()) < 2:
                raise Mismatch(f"the batch {sorted(indices)} holds {counts.tolist()} documents of the classes "
                               f"0..{num_classes - 1}: every class needs at least two\n  on {where}")
            again = ask(student, where, labels, batch_size, torch.Generator().manual_seed(seed))
            if batch_indices(again, batch_size, n, where) != indices:
                raise Mismatch(f"two calls with generators of the same seed gave different batches: draw every "
                               f"random choice from `generator`\n  on {where}", credit=0.5)
            seen[indices] = True
            batches.add(tuple(sorted(indices)))
            tried += 1
        if len(batches) == 1 or not bool(seen.all()):
            never = (~seen).nonzero().flatten().tolist()
            raise Mismatch(f"200 generators with different seeds gave {len(batches)} different batch(es) and never "
                           f"chose the documents {never}: the two of each class and the rest must be drawn at "
                           f"random\n  on {where}", credit=0.5)
    return tried


EXERCISES = {
    "08.1": Exercise(
        "the cached gradient", "cached_gradient",
        "step 1: embed every chunk X_k @ W under torch.no_grad() and concatenate; step 2: make the embeddings a "
        "leaf that requires grad, call the loss once and take G = dLoss/dE; step 3: embed each chunk again with "
        "gradient and push its rows G_k back, adding up the chunks' contributions to dLoss/dW",
        check_cached_gradient,
        forbidden=("cached_backward",), points=3, face=METHOD,
        more_hint="torch.autograd.grad(X_k @ W, W, G_k)[0] is chunk k's term; W needs requires_grad_() in step 3"),
    "08.2": Exercise(
        "the cross-entropy scale under DDP", "ce_scales",
        "rank r averages its own n_r documents and DDP averages the W ranks; choose c_r so that "
        "(1/W) sum_r c_r mean_r equals the mean over all N = sum_r n_r documents",
        check_ce_scales,
        forbidden=("local_batch",), points=2, face=METHOD,
        more_hint="the global mean is sum_r (n_r / N) mean_r, so c_r / W = n_r / N"),
    "08.3": Exercise(
        "a class-balanced batch", "balanced_batch",
        "for every class draw two of its documents at random (torch.randperm with the generator), then fill "
        "the batch with a random choice of the documents not yet taken",
        check_balanced_batch,
        forbidden=("ClassBalancedBatchSampler",), points=2, face=METHOD,
        more_hint="members = (labels == c).nonzero().flatten(); members[torch.randperm(len(members), "
                  "generator=generator)[:2]]"),
}
