"""Measure how well FROZEN all-MiniLM-L6-v2 embeddings separate the reviews dataset's labels.

For both label sets (``reviews_topic`` and ``reviews_sentiment``) it prints the class balance of
every split and the test accuracy of

- logistic regression fitted on the train embeddings;
- label propagation: train and test texts form one Gaussian-kernel graph (sigma by the SQRT
  rule, transition ``D^-1 W``), train labels visible, test labels hidden and predicted in closed
  form ``F_U = (I - T_UU)^-1 T_UL Y_L``;
- a 10-nearest-neighbour classifier (cosine), a simple graph-quality number;
- for contrast, logistic regression on TF-IDF word uni- and bigrams (no encoder): the label can
  be read from the words, so it can be learned.

The expected story: topic is easy for the frozen encoder, sentiment is not. The numbers go into
``data/README.md``. Run from the repository root (about a minute on a laptop CPU):

    python scripts/measure_reviews_dataset.py [--data-dir data]
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
import torch.nn.functional as F
import transformers
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from gloss_lite.data import EMBEDDED_DATASETS, load_dataset
from gloss_lite.encoders import load_encoder
from gloss_lite.graph import gaussian_affinity, transition_matrix
from gloss_lite.lpa import propagate
from gloss_lite.sigma import sigma_sqrt


def lpa_test_accuracy(train_emb, train_labels, test_emb, test_labels, num_classes) -> tuple[float, float]:
    """Transductive LPA over one graph of train + test; returns (accuracy, sigma)."""
    embeddings = torch.cat([train_emb, test_emb])
    labels = torch.cat([train_labels, test_labels])
    visible = torch.arange(len(embeddings)) < len(train_emb)
    sigma = sigma_sqrt(embeddings)
    transition = transition_matrix(gaussian_affinity(embeddings.double(), sigma), "row")
    predicted = propagate(transition, labels, visible, num_classes)[~visible].argmax(dim=1)
    return float((predicted == test_labels).double().mean()), sigma


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="default: the project's data/ folder")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")

    datasets = {name: load_dataset(name, data_dir=args.data_dir) for name in EMBEDDED_DATASETS}
    print("\nclass balance (rows per label)")
    for name, dataset in datasets.items():
        counts = {
            split: pd.Series(split_data.labels.tolist()).value_counts().sort_index().tolist()
            for split, split_data in zip(("train", "val", "test"), dataset)
        }
        table = pd.DataFrame(counts, index=dataset.class_names)
        table.loc["total"] = table.sum()
        print(f"\n{name}\n{table.to_string()}")

    texts = datasets["reviews_topic"].train.texts, datasets["reviews_topic"].test.texts
    assert all(texts[0] == d.train.texts and texts[1] == d.test.texts for d in datasets.values())
    encoder = load_encoder(device="cpu")
    # L2-normalised: the geometry the graph sees (LR and 10-NN use the same vectors)
    train_emb, test_emb = (F.normalize(encoder.embed(t, progress=False), dim=1) for t in texts)
    tfidf = TfidfVectorizer(ngram_range=(1, 2)).fit(texts[0])

    print("\nfrozen all-MiniLM-L6-v2, test accuracy")
    print(f"{'dataset':20s} {'LR':>6s} {'LPA':>6s} {'10-NN':>6s} {'sigma':>6s}   TF-IDF LR (no encoder)")
    for name, dataset in datasets.items():
        y_train, y_test = dataset.train.labels, dataset.test.labels
        lr = LogisticRegression(max_iter=2000).fit(train_emb, y_train).score(test_emb, y_test)
        knn = KNeighborsClassifier(n_neighbors=10, metric="cosine").fit(train_emb, y_train)
        lpa, sigma = lpa_test_accuracy(train_emb, y_train, test_emb, y_test, dataset.num_classes)
        bow = LogisticRegression(max_iter=2000).fit(tfidf.transform(texts[0]), y_train)
        print(
            f"{name:20s} {lr:6.3f} {lpa:6.3f} {knn.score(test_emb, y_test):6.3f} {sigma:6.3f}   "
            f"{bow.score(tfidf.transform(texts[1]), y_test):6.3f}"
        )


if __name__ == "__main__":
    main()
