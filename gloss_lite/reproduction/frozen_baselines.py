"""Baselines that put the frozen-feature numbers in context, on full splits.

Taught in ``notebooks/07_reproducing_the_paper.ipynb``.

- **TF-IDF + logistic regression** (scikit-learn): word unigrams and bigrams seen in at least two
  training documents, sublinear term frequency, an L2-regularised multinomial logistic regression
  whose inverse strength ``C`` is chosen on validation accuracy from ``C_GRID``. No encoder at all.
- **Linear probe**: the same logistic regression on the frozen embeddings (standardised with the
  training mean and deviation). What the encoder's features give without any training of the
  encoder or an adapter.
- **Transductive LPA** (the course's ``gloss_lite.evaluate.lpa_predict``): one graph holds a
  class-stratified sample of the training documents (``reference_size``, labels visible) and
  every test document (hidden); the test labels are propagated, ``F_U = (I - T_UU)^-1 T_UL Y_L``.
  Sigma comes from the reference embeddings by the course's rules (``gloss_lite.sigma.estimate``):
  ``"sqrt"`` and ``"dicm"``. No training at all: the encoder's geometry alone.

Each returns the test predictions; the caller scores them.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .. import sigma
from ..data import Split, stratified_sample
from ..evaluate import lpa_predict

__all__ = ["tfidf_logistic_regression", "linear_probe", "transductive_lpa", "baseline_methods"]

C_GRID = (0.1, 1.0, 10.0, 100.0)
LPA_REFERENCE_SIZE = 4000


def _fit_on_validation(train_x, train_y, val_x, val_y):
    """The logistic regression of ``C_GRID`` with the best validation accuracy (the smaller C on a tie)."""
    from sklearn.linear_model import LogisticRegression

    best, best_score = None, -1.0
    for strength in C_GRID:
        model = LogisticRegression(C=strength, max_iter=2000).fit(train_x, train_y)
        score = float((model.predict(val_x) == val_y).mean())
        if score > best_score:
            best, best_score = model, score
    return best


def tfidf_logistic_regression(train: Split, val: Split, test: Split) -> tuple[np.ndarray, dict]:
    """Test predictions of TF-IDF + logistic regression, and the chosen settings."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    train_x = vectorizer.fit_transform(train.texts)
    model = _fit_on_validation(train_x, train.labels.numpy(), vectorizer.transform(val.texts), val.labels.numpy())
    return model.predict(vectorizer.transform(test.texts)), {"C": model.C, "features": train_x.shape[1]}


def linear_probe(features: dict, train: Split, val: Split) -> tuple[np.ndarray, dict]:
    """Test predictions of logistic regression on the standardised frozen embeddings."""
    mean, std = features["train"].mean(dim=0), features["train"].std(dim=0).clamp_min(1e-6)
    scaled = {name: ((matrix - mean) / std).numpy() for name, matrix in features.items()}
    model = _fit_on_validation(scaled["train"], train.labels.numpy(), scaled["val"], val.labels.numpy())
    return model.predict(scaled["test"]), {"C": model.C, "features": scaled["train"].shape[1]}


def transductive_lpa(features: dict, train: Split, rule: str, *, reference_size: int = LPA_REFERENCE_SIZE,
                     seed: int = 0) -> tuple[np.ndarray, dict]:
    """Test predictions of label propagation over one graph of the reference and all test documents."""
    rows = stratified_sample(train.labels, reference_size, seed=seed)
    reference, labels = features["train"][rows], train.labels[rows]
    width = sigma.estimate(rule, reference, labels)
    predicted = lpa_predict(reference, labels, features["test"], len(train.class_names), sigma=width)
    return predicted.numpy(), {"sigma": width, "reference": len(rows)}


def baseline_methods(features: dict, train: Split, val: Split, test: Split, *,
                     reference_size: int = LPA_REFERENCE_SIZE) -> dict:
    """``{method: compute}``, cheapest first: ``compute()`` returns the test predictions and the settings."""
    methods = {"linear probe": partial(linear_probe, features, train, val),
               "tf-idf + logistic regression": partial(tfidf_logistic_regression, train, val, test)}
    for rule in sigma.SIGMA_RULES:
        methods[f"lpa ({rule})"] = partial(transductive_lpa, features, train, rule, reference_size=reference_size)
    return methods
