"""The course's reviews dataset (data/reviews_topic, data/reviews_sentiment) and its generator.

Fast and encoder-free: the frozen-MiniLM numbers are measured by
scripts/measure_reviews_dataset.py and recorded in data/README.md.
"""

from __future__ import annotations

import csv
import importlib.util
from itertools import product
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT / "data"
DATASETS = ("reviews_topic", "reviews_sentiment")
SPLITS = ("train", "val", "test")
TOPICS = ("books", "films", "hotels", "phones", "restaurants", "trails")
SENTIMENTS = ("negative", "positive")


def load_generator():
    path = REPO_ROOT / "scripts" / "make_reviews_dataset.py"
    spec = importlib.util.spec_from_file_location("make_reviews_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_rows(dataset: str, split: str) -> list[tuple[str, str]]:
    with open(DATA / dataset / f"{split}.csv", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["text", "label"]
        return [(text, label) for text, label in reader]


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str], list[tuple[str, str]]]:
    return {(dataset, split): read_rows(dataset, split) for dataset in DATASETS for split in SPLITS}


def test_generator_reproduces_committed_files(tmp_path):
    load_generator().write_datasets(tmp_path)
    for dataset, split in product(DATASETS, SPLITS):
        made = (tmp_path / dataset / f"{split}.csv").read_bytes()
        committed = (DATA / dataset / f"{split}.csv").read_bytes()
        assert made == committed, f"{dataset}/{split}.csv differs from the generator's output"


def test_both_datasets_hold_the_same_texts_in_the_same_order(rows):
    for split in SPLITS:
        topic_texts = [text for text, _ in rows["reviews_topic", split]]
        sentiment_texts = [text for text, _ in rows["reviews_sentiment", split]]
        assert topic_texts == sentiment_texts, split


def test_no_duplicates_and_no_text_in_two_splits(rows):
    texts = [text for split in SPLITS for text, _ in rows["reviews_topic", split]]
    assert len(texts) == len(set(texts))


def test_labels_and_every_cell_in_every_split(rows):
    for split in SPLITS:
        topics = [label for _, label in rows["reviews_topic", split]]
        sentiments = [label for _, label in rows["reviews_sentiment", split]]
        assert set(topics) == set(TOPICS)
        assert set(sentiments) == set(SENTIMENTS)
        cells = set(zip(topics, sentiments))
        assert cells == set(product(TOPICS, SENTIMENTS)), f"{split} misses a (topic, sentiment) cell"


def test_sizes_and_lengths(rows):
    total = sum(len(rows["reviews_topic", split]) for split in SPLITS)
    assert 600 <= total <= 1500
    train, val, test = (len(rows["reviews_topic", split]) for split in SPLITS)
    assert train > val and train > test
    for text, _ in (row for split in SPLITS for row in rows["reviews_topic", split]):
        assert 10 <= len(text.split()) <= 40, text
