"""A training step that keeps the GPU busy: one wait per step, texts tokenised once per run, unchecked G-Loss.

Waits for the GPU are counted on the CPU by the step benchmark's ``SyncCounter`` (the calls that
would wait on a GPU: value reads, ``nonzero``, ``unique``, boolean indexing).
"""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from test_train import quick, tiny_encoder

from gloss_lite.data import load_dataset
from gloss_lite.encoders import TokenTable, tokenize
from gloss_lite.losses import GLoss, g_loss
from gloss_lite.lpa import propagate
from gloss_lite.masking import split_mask
from gloss_lite.training import fit

spec = importlib.util.spec_from_file_location("step_cost", Path(__file__).resolve().parents[1] / "benchmarks"
                                              / "step_cost.py")
step_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(step_cost)


@pytest.fixture(scope="module")
def splits():
    train, val, _ = load_dataset("reviews_sentiment")
    return train.sample(24, seed=0), val.sample(12, seed=0)


@pytest.mark.parametrize("loss", ["gloss+ce", "ce"])
def test_a_training_step_waits_for_the_device_once(loss, splits):
    train, val = splits
    encoder = tiny_encoder()
    with step_cost.SyncCounter(active=lambda: encoder.training) as counter:
        fit(train, val, quick(loss=loss, lpa_eval=False), encoder=encoder)
    device_side = {where: count for (where, side), count in counter.counts.items() if side == "device"}
    # 3 steps: one read of the step's numbers each, and one check of the attention mask inside transformers
    assert device_side == {"_read": 3, "forward": 3}, counter.counts


def test_the_syncs_of_the_trainer_are_told_apart_from_host_side_work():
    counter = step_cost.SyncCounter()
    labels = torch.tensor([0, 1, 0, 1, 1])
    with counter:
        split_mask(labels, 0.6, generator=torch.Generator().manual_seed(0))  # host-side by design
        float(torch.ones(3).sum())  # a value read: a wait on a GPU
    assert sum(n for (where, side), n in counter.counts.items() if side == "device") == 1
    assert sum(n for (where, side), n in counter.counts.items() if side == "host") >= 2


def test_each_split_is_tokenised_once_per_run(splits, monkeypatch):
    train, val = splits
    tokenizer = tiny_encoder().tokenizer
    calls = []
    original = type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, texts, *a, **k: calls.append(len(texts)) or original(
        self, texts, *a, **k))
    result = fit(train, val, quick(loss="gloss+ce", epochs=2, sigma="sqrt"), encoder=tiny_encoder(), test=val)
    assert len(result.history) == 2 and result.test_last is not None
    assert calls == [len(set(train.texts) | set(val.texts))]  # one call: every text of the run, once


def test_a_token_table_gives_what_tokenize_gives(splits):
    train, _ = splits
    tokenizer = tiny_encoder().tokenizer
    table = TokenTable(tokenizer, train.texts, 32)
    generator = torch.Generator().manual_seed(0)
    for size in (1, 5, 24):
        texts = [train.texts[i] for i in torch.randperm(len(train), generator=generator)[:size].tolist()]
        expected, got = tokenize(tokenizer, texts, 32), table.lookup(texts)
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    assert table.lookup(["a text the table has never seen"]) is None
    encoder = tiny_encoder()
    with encoder.pretokenized(train.texts):
        assert encoder.token_table is not None
    assert encoder.token_table is None


def gloss_problem(seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(20, 6, generator=generator, requires_grad=True)
    labels = torch.arange(20) % 3
    return embeddings, labels, split_mask(labels, 0.6, generator=generator)


@pytest.mark.parametrize("options", [{}, {"class_weights": torch.tensor([1.0, 2.0, 0.5]), "target": "authors",
                                          "divide_by_hidden": True, "scheme": "row"}])
def test_unchecked_g_loss_is_the_checked_one_without_its_waits(options):
    embeddings, labels, mask = gloss_problem()
    checked = g_loss(embeddings, labels, mask, sigma=0.5, num_classes=3, **options)
    with step_cost.SyncCounter() as counter:
        unchecked = g_loss(embeddings, labels, mask, sigma=0.5, num_classes=3, check=False, **options)
    assert torch.equal(checked, unchecked)
    grads = [torch.autograd.grad(value, embeddings)[0] for value in (checked, unchecked)]
    assert torch.equal(*grads)
    assert not [key for key in counter.counts if key[1] == "device"], counter.counts


def test_unchecked_g_loss_still_refuses_a_mask_it_cannot_score_when_the_mask_is_on_the_cpu():
    embeddings, labels, _ = gloss_problem()
    mask = labels != 2  # class 2 all hidden: propagation can never predict it
    with pytest.raises(ValueError, match=r"hidden classes \[2\] have no visible node"):
        g_loss(embeddings, labels, mask, sigma=0.5, num_classes=3, check=False)
    module = GLoss(3, 0.5, 0.6, seed=0, check=False)
    assert module.check is False and torch.isfinite(module(embeddings, labels))


def test_the_solve_reports_a_singular_system_by_error_when_checked_and_by_nan_when_not():
    transition = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0])
    mask = torch.tensor([True, True, False, False])
    with pytest.raises(torch.linalg.LinAlgError, match="I - T_UU is singular"):
        propagate(transition, labels, mask, 2, teleport=0.0)
    unchecked = propagate(transition, labels, mask, 2, teleport=0.0, check=False)
    assert torch.isnan(unchecked[2:]).all() and torch.equal(unchecked[:2], torch.eye(2, dtype=torch.float64))


def test_an_unchecked_nan_reaches_the_steps_alarm_not_an_error_inside_g_loss(splits):
    """With G-Loss unchecked, a NaN embedding is caught by the step's one read, on every rank alike."""
    train, val = splits
    encoder = tiny_encoder()
    with torch.no_grad():
        encoder.model.embeddings.word_embeddings.weight.fill_(float("nan"))
    with pytest.raises(Exception, match="step 1 of 3 .*the embeddings = NaN or infinite"):
        fit(train, val, quick(loss="gloss+ce", lpa_eval=False), encoder=copy.deepcopy(encoder))
