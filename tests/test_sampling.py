"""The class-balanced batch sampler against properties checked by hand."""

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gloss_lite.training import TrainConfig
from gloss_lite.training import loop as train_module
from gloss_lite.training.sampling import ClassBalancedBatchSampler


def class_counts(labels, batch):
    return Counter(labels[i] for i in batch)


@pytest.mark.parametrize("labels, batch_size", [
    ([0] * 10 + [1] * 12 + [2] * 30, 8),
    ([0] * 40 + [1] * 3, 4),
    ([3] * 7 + [5] * 7 + [9] * 7, 6),
    ([0, 1] * 50, 9),
])
def test_every_batch_holds_two_documents_of_every_class_and_no_document_twice(labels, batch_size):
    sampler = ClassBalancedBatchSampler(labels, batch_size, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    classes = set(labels)
    for batch in batches:
        counts = class_counts(labels, batch)
        assert set(counts) == classes and min(counts.values()) >= 2, counts
        assert len(set(batch)) == len(batch)
    assert all(len(batch) == batch_size for batch in batches[:-1])
    assert 2 * len(classes) <= len(batches[-1]) <= batch_size + 2 * len(classes) - 1


def test_every_document_is_used_exactly_once_when_the_classes_are_large_enough():
    labels = [0] * 17 + [1] * 23 + [2] * 20  # 60 documents, batches of 12: 5 batches, each class >= 10
    batches = list(ClassBalancedBatchSampler(labels, 12, seed=0))
    assert [len(b) for b in batches] == [12] * 5
    assert sorted(i for batch in batches for i in batch) == list(range(60))


def test_a_small_class_is_reused_and_every_other_document_used_once():
    # By hand: 5 + 6 documents in batches of 4. B = 2 needs 5 + 6 = 11 > 8 places; B = 3 needs
    # max(5, 6) + max(6, 6) = 12 <= 12. Class 0 fills 6 places with 5 documents: one of them twice.
    labels = [0] * 5 + [1] * 6
    batches = list(ClassBalancedBatchSampler(labels, 4, seed=1))
    assert [len(b) for b in batches] == [4, 4, 4]
    uses = Counter(i for batch in batches for i in batch)
    assert set(uses) == set(range(11))
    assert sorted(uses[i] for i in range(5)) == [1, 1, 1, 1, 2]
    assert all(uses[i] == 1 for i in range(5, 11))


def test_a_last_batch_too_small_for_two_of_each_class_joins_the_one_before():
    # By hand: 10 + 10 documents in batches of 6. B = 4 holds them (20 <= 24) but its last batch
    # would hold 20 - 18 = 2 < 2 * 2 documents, so it joins the third: sizes 6, 6, 8.
    labels = [0] * 10 + [1] * 10
    batches = list(ClassBalancedBatchSampler(labels, 6, seed=0))
    assert [len(b) for b in batches] == [6, 6, 8]
    assert sorted(i for batch in batches for i in batch) == list(range(20))
    # 5 + 4 documents in batches of 8: one batch of 8 and one of 1 would be cut; they make one of 9
    assert [len(b) for b in ClassBalancedBatchSampler([0] * 5 + [1] * 4, 8)] == [9]


def test_the_same_seed_and_epoch_give_the_same_batches_and_set_epoch_reshuffles():
    labels = torch.arange(60) % 3
    first, second = ClassBalancedBatchSampler(labels, 12, seed=7), ClassBalancedBatchSampler(labels, 12, seed=7)
    assert list(first) == list(second) == list(first)
    epoch_0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch_0 and len(list(first)) == len(epoch_0)
    first.set_epoch(0)
    assert list(first) == epoch_0
    assert list(ClassBalancedBatchSampler(labels, 12, seed=8)) != epoch_0


def test_it_drives_a_dataloader():
    labels = torch.tensor([0] * 9 + [1] * 9)
    sampler = ClassBalancedBatchSampler(labels, 6, seed=0)
    loader = DataLoader(TensorDataset(torch.arange(18), labels), batch_sampler=sampler)
    for (indices, batch_labels), batch in zip(loader, sampler):
        assert indices.tolist() == batch and batch_labels.bincount().min() >= 2


@pytest.mark.parametrize("labels, batch_size, message", [
    ([0, 1, 2] * 4, 5, "use batch_size >= 6"),
    ([0] * 5 + [1], 4, r"classes \[1\] have a single document"),
    ([2] * 8, 4, "at least 2 classes"),
    ([0.0, 1.0, 0.0, 1.0], 4, "integer tensor of class ids, got a torch.float32"),
    ("0101", 4, "got strings; map each class name to an id"),
    ([0, 1, 0, 1], 0, "batch_size must be a positive int"),
])
def test_bad_input_is_a_clear_error(labels, batch_size, message):
    with pytest.raises(ValueError, match=message):
        ClassBalancedBatchSampler(labels, batch_size)


def test_fit_offers_the_sampler_and_checks_the_batch_size():
    with pytest.raises(ValueError, match="batch_sampler must be one of"):
        TrainConfig(batch_sampler="balance").validate()
    with pytest.raises(ValueError, match="use batch_size >= 8, or batch_sampler='shuffle'"):
        TrainConfig(batch_sampler="balanced", batch_size=6).validate(num_classes=4)
    TrainConfig(batch_sampler="balanced", batch_size=8).validate(num_classes=4)


def test_fit_trains_on_the_balanced_batches(monkeypatch):
    from test_train import quick, tiny_encoder

    from gloss_lite.data import load_dataset

    train, val, _ = load_dataset("reviews_sentiment")
    train, val = train.sample(20, seed=0), val.sample(8, seed=0)
    seen = []
    original = train_module.Encoder.forward

    def forward(self, texts):
        if self.training:
            seen.append(list(texts))
        return original(self, texts)

    monkeypatch.setattr(train_module.Encoder, "forward", forward)
    config = quick(loss="gloss+ce", batch_size=6, batch_sampler="balanced", lpa_eval=False)
    result = train_module.fit(train, val, config, encoder=tiny_encoder())
    expected = ClassBalancedBatchSampler(train.labels, 6, seed=config.seed * 1000)
    text_of = dict(enumerate(train.texts))
    assert [sorted(batch) for batch in seen] == [sorted(text_of[i] for i in b) for b in expected]
    assert len(result.history) == 1 and result.history[0]["loss"] > 0
