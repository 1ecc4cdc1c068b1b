"""Class-balanced batches: every batch holds at least two documents of every class.

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``.

G-Loss hides some labels of a batch and asks label propagation to recover them from the
visible ones. The stratified mask (``gloss_lite.masking.split_mask``) keeps one visible node of
every class present and hides at least one node of every class of two or more, so a batch that
holds two documents of each class lets G-Loss score every class in every step. A plain shuffle
gives no such promise: with ``C`` classes, a batch of ``b`` documents misses a class of share
``p`` with probability about ``(1 - p)^b``, and the last batch of an epoch can be a single
document, which cannot be masked at all.

``ClassBalancedBatchSampler(labels, batch_size, seed=0)`` is a ``torch.utils.data.Sampler`` of
index lists (pass it to ``DataLoader(dataset, batch_sampler=...)``). With ``n`` documents,
``K`` classes present, ``n_c`` documents of class ``c`` and ``B`` batches, an epoch is built so:

1. **How many batches.** Class ``c`` fills ``q_c(B) = max(n_c, 2 B)`` places in an epoch: all
   of its documents, or two per batch when it has fewer. ``B`` is the fewest batches of at most
   ``batch_size`` documents that hold them all, the smallest ``B`` with
   ``B * batch_size >= sum_c q_c(B)``. It exists because ``batch_size >= 2 K``.
2. **Two of each class in every batch.** Each class's documents are shuffled and dealt two per
   batch. A class with fewer than ``2 B`` documents runs out; its documents are then reused:
   dealt again in a fresh order (no document twice in one batch), so some of them appear twice
   (or more) in the epoch. A class of one document cannot give two and is an error.
3. **The rest.** The documents not yet dealt (the classes' surplus beyond ``2 B``) are shuffled
   together and fill the batches in order, each to ``batch_size``; so every batch but the last
   holds exactly ``batch_size`` documents, in a shuffled order.
4. **The last batch.** If the last batch would hold fewer than ``2 K`` documents (too few for two
   of each class), it is merged into the batch before it, the rule ``gloss_lite.training.loop._batches``
   follows: ``B`` drops by one and the last batch holds between ``batch_size + 1`` and
   ``batch_size + 2 K - 1`` documents.

So every document is used at least once per epoch, exactly once when every class has at least
``2 B`` documents; ``len(sampler) = B`` is the same in every epoch. The order is seeded by
``(seed, epoch)``: ``set_epoch(epoch)`` (which ``transformers.Trainer`` calls) gives the next
epoch its own shuffle, and the same ``(seed, epoch)`` always gives the same batches.

**Why not a library's sampler.** sentence-transformers' ``GroupByLabelBatchSampler`` also puts
two documents of a label together, and works with ``GLossLoss``; but it deals labels in turns and
stops when one label is left, so each epoch drops the largest class's surplus beyond the
second-largest (and an odd document of every class), and it needs an even batch size: at batch
32 it leaves out 23% of R8's training documents in every epoch (1,128 of 4,936), 19% of R52's.
pytorch-metric-learning's ``MPerClassSampler`` draws ``m`` documents of every class per batch,
with replacement across the epoch: classes are drawn uniformly, whatever their size, and the epoch
length is a setting. This sampler keeps every document in every epoch and only tops up small
classes (``tests/test_sampling.py`` shows the difference).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from ..checks import check_int, class_ids

__all__ = ["ClassBalancedBatchSampler"]


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Batches of document indices with at least two documents of every class (see the module docstring).

    Args:
        labels: one integer class id per document of the dataset (a list or a 1-D tensor).
        batch_size: documents per batch; at least ``2 K`` for ``K`` classes present.
        seed: seeds the shuffle, together with the epoch (``set_epoch``).

    Raises:
        ValueError: labels that are not integer class ids, fewer than two classes, a class with
            a single document, or ``batch_size < 2 K`` (the message says which batch size to use).
    """

    def __init__(self, labels: Sequence[int] | torch.Tensor, batch_size: int, *, seed: int = 0) -> None:
        labels = class_ids(labels).cpu()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        check_int("seed", seed, minimum=0)
        self.seed = seed
        if len(labels) == 0:
            raise ValueError("class-balanced batches need documents, got none: the training set is empty")
        classes, counts = torch.unique(labels, return_counts=True)
        if len(classes) < 2:
            raise ValueError(
                f"class-balanced batches need at least 2 classes, got {len(classes)} "
                f"({classes.tolist()}); with one class there is nothing for G-Loss to tell apart"
            )
        single = classes[counts < 2].tolist()
        if single:
            raise ValueError(
                f"classes {single} have a single document, so no batch can hold two of them; "
                "drop those classes or add documents to them"
            )
        if batch_size < 2 * len(classes):
            raise ValueError(
                f"batch_size {batch_size} cannot hold 2 documents of each of the {len(classes)} classes present; "
                f"use batch_size >= {2 * len(classes)}"
            )
        self.labels = labels
        self.batch_size = batch_size
        self.members = [(labels == cls).nonzero().flatten() for cls in classes]
        self.epoch = 0
        self.sizes = self._batch_sizes([len(m) for m in self.members], batch_size)

    @staticmethod
    def _batch_sizes(counts: list[int], batch_size: int) -> list[int]:
        """The batch sizes of an epoch: rules 1 and 4 of the module docstring."""
        def places(num_batches: int) -> int:
            return sum(max(count, 2 * num_batches) for count in counts)

        num_batches = 1
        while num_batches * batch_size < places(num_batches):
            num_batches += 1
        total = places(num_batches)
        last = total - (num_batches - 1) * batch_size
        if num_batches > 1 and last < 2 * len(counts):  # too small for two of each class: merge it
            num_batches -= 1
            total = places(num_batches)
        return [batch_size] * (num_batches - 1) + [total - (num_batches - 1) * batch_size]

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of ``epoch`` from the next ``iter`` on."""
        check_int("epoch", epoch, minimum=0)
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def batches(self) -> list[list[int]]:
        """The batches of the current epoch, as lists of indices into ``labels``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        num_batches = len(self.sizes)
        pairs, surplus = [], [torch.empty(0, dtype=torch.long)]
        for members in self.members:
            stream = self._deal(members, 2 * num_batches, generator)
            pairs.append(stream[: 2 * num_batches].view(num_batches, 2))
            if len(members) >= 2 * num_batches:  # one shuffle: the documents after the pairs are the surplus
                surplus.append(stream[2 * num_batches:])
        rest = torch.cat(surplus)
        rest = rest[torch.randperm(len(rest), generator=generator)]
        batches, start = [], 0
        for i, size in enumerate(self.sizes):
            take = size - 2 * len(self.members)
            batch = torch.cat([pair[i] for pair in pairs] + [rest[start:start + take]])
            start += take
            batches.append(batch[torch.randperm(len(batch), generator=generator)].tolist())
        return batches

    @staticmethod
    def _deal(members: torch.Tensor, places: int, generator: torch.Generator) -> torch.Tensor:
        """``places`` documents of one class: shuffled, and shuffled again when they run out.

        A reshuffle never starts with the document that ended the one before, so two neighbours
        (a pair dealt to one batch) are always two different documents.
        """
        stream: list[torch.Tensor] = []
        dealt = 0
        while dealt < max(places, 1):
            order = members[torch.randperm(len(members), generator=generator)]
            if stream and order[0] == stream[-1][-1]:
                order[[0, 1]] = order[[1, 0]]
            stream.append(order)
            dealt += len(order)
        return torch.cat(stream)
