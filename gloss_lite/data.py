"""Load a text-classification dataset as train / val / test splits.

A dataset is a folder ``<root>/<name>/`` holding ``train.csv``, ``val.csv`` and
``test.csv``; each CSV has a header and the columns ``text`` and ``label``
(other columns, such as an unnamed row index, are ignored). ``load_dataset``
looks for the folder in these roots, in order:

1. the ``data_dir`` argument, if given;
2. the folder named by the environment variable ``GLOSS_LITE_DATA``, if set;
3. the project's own ``data/`` folder (``PROJECT_DATA_DIR``), which ships the
   small embedded datasets ``reviews_sentiment`` and ``reviews_topic``;
4. for the paper's benchmarks (``BENCHMARKS``) only: a download from the
   authors' public GitHub repository, checked and cached on disk (see
   ``gloss_lite.benchmark_files.download_benchmark``).

The paper's five benchmarks, in the TextGCN train/test splits with the
authors' 10% ``val`` hold-out (rows: train / val / test):

- ``mr``: movie-review sentences, 2 classes (negative, positive); 6397 / 711 / 3554.
- ``r8``: Reuters-21578 news, 8 topics (acq, crude, earn, ..., trade); 4936 / 549 / 2189.
- ``r52``: Reuters-21578 news, 52 topics, labels written as names; 5865 / 667 / 2568.
- ``ohsumed``: MEDLINE titles and abstracts, 23 disease categories named by their MeSH
  code ("C01 bacterial infections and mycoses", ..., "C23 pathological conditions,
  signs and symptoms"); 3021 / 336 / 4043.
- ``20ng``: 20 Newsgroups ("bydate") posts with their headers, 20 newsgroups
  ("alt.atheism", ..., "talk.religion.misc"); 10182 / 1132 / 7532.

Ohsumed and 20NG texts are long (20NG posts reach 30,000+ characters); the
encoder keeps each text's first ``max_length`` tokens (see
``gloss_lite.encoders.tokenize``).

A benchmark's content is checked wherever it comes from. A downloaded file
with a published SHA-256 is checked byte for byte; any other file (a download
without one, or a local copy) is checked after parsing against its split's
content fingerprint (``content_fingerprint``, which does not depend on the
CSV's layout): a copy with a row missing, or another text, is refused with a
clear error (``load_dataset(..., verify=False)`` loads a modified local copy as
it is).

Labels are either integer ids (``0, 1, ...``) or class names. The train split
defines the classes (the labels it holds; see ``_read_folder``); val and test
must use the same ones. A local copy of a benchmark whose splits do not have the
published number of rows (``BENCHMARKS[name]["rows"]``) is refused.

Taught in notebooks/00_overview.ipynb.
"""

from __future__ import annotations

import os
import pathlib
import re
from dataclasses import dataclass

import torch

from .benchmark_files import (
    BENCHMARKS,
    PROJECT_DATA_DIR,
    SPLITS,
    DatasetNotFoundError,
    check_content,
    download_benchmark,
    read_split,
)

__all__ = [
    "Dataset",
    "DEFAULT_DATASET",
    "EMBEDDED_DATASETS",
    "joint_strata",
    "load_dataset",
    "Split",
    "stratified_sample",
]

DEFAULT_DATASET = "reviews_sentiment"
EMBEDDED_DATASETS = ("reviews_sentiment", "reviews_topic")


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: the texts and their integer labels."""

    texts: list[str]
    labels: torch.Tensor  # int64, shape (n,)
    class_names: tuple[str, ...]

    def __len__(self):
        return len(self.texts)

    def subset(self, indices) -> "Split":
        """The rows at ``indices`` (a sequence of ints or an int tensor), in that order."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return Split([self.texts[i] for i in indices.tolist()], self.labels[indices], self.class_names)

    def sample(self, size: int | None, *, seed: int = 0) -> "Split":
        """A class-stratified random sample of ``size`` rows (see ``stratified_sample``)."""
        return self.subset(stratified_sample(self.labels, size, seed=seed))


def joint_strata(*label_sets: torch.Tensor) -> torch.Tensor:
    """One integer per combination of labels, e.g. the (topic, sentiment) cell of each review.

    ``key = (...(y1 * n2 + y2) * n3 + y3 ...)`` with ``n_k`` the number of classes of ``y_k``
    (its largest label plus one), so two documents share a key exactly when they share every label.
    """
    key = torch.zeros(len(label_sets[0]), dtype=torch.int64)
    for labels in label_sets:
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != key.shape:
            raise ValueError(f"label sets must have the same length, got {len(key)} and {len(labels)}")
        key = key * (int(labels.max()) + 1) + labels
    return key


def stratified_sample(strata: torch.Tensor, size: int | None, *, seed: int = 0) -> torch.Tensor:
    """Indices of a random sample of ``size`` items, stratified by ``strata``, in ascending order.

    Each stratum (a class, or any integer key such as a (topic, sentiment) cell) gets its share
    of ``size``, rounded by largest remainder, and at least one item while ``size`` allows.
    ``None`` or a ``size`` of at least ``len(strata)`` returns every index.
    """
    strata = torch.as_tensor(strata)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise ValueError(f"sample size must be an int >= 1 or None (every row), got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if size is None or size >= len(strata):
        return torch.arange(len(strata))
    if size < 1:
        raise ValueError(f"sample size must be >= 1, got {size}")
    generator = torch.Generator().manual_seed(seed)
    keys, counts = torch.unique(strata, return_counts=True)
    shares = counts.double() * size / len(strata)
    quotas = shares.floor().long().clamp_min(1)
    while quotas.sum() > size:  # the at-least-one rule overshot: trim the largest quotas
        quotas[quotas.argmax()] -= 1
    for i in (shares - quotas).argsort(descending=True)[: size - int(quotas.sum())]:
        quotas[i] += 1  # hand the items left over to the largest remainders
    chosen = []
    for key, quota in zip(keys, quotas):
        members = (strata == key).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.cat(chosen).sort().values


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset: three splits sharing one list of class names."""

    name: str
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    source: pathlib.Path  # the folder the CSVs were read from

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

    def __iter__(self):
        """Yield train, val and test, so that ``train, val, test = dataset`` works."""
        return iter((self.train, self.val, self.test))


# ---------------------------------------------------------------------------
# Reading CSV files


# ---------------------------------------------------------------------------
# Checking a benchmark's content


def _is_int(label: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", label) is not None


def _encode(labels, lookup, path, message) -> torch.Tensor:
    """Map label strings to ids with ``lookup``; unknown labels raise ValueError."""
    unknown = sorted(set(label for label in labels if label not in lookup))
    if unknown:
        shown = ", ".join(repr(label) for label in unknown[:10])
        raise ValueError(f"{path}: label(s) {shown} {message}")
    return torch.tensor([lookup[label] for label in labels], dtype=torch.int64)


def _read_folder(name: str, folder: pathlib.Path, verify: bool = True) -> Dataset:
    """Read ``folder/{train,val,test}.csv`` into a Dataset; train defines the classes.

    With ``verify``, a benchmark's splits are checked against their fingerprints.

    Integer labels of a benchmark with known class names (``mr``, ``r8``) are ids into that
    list. Other integer labels: the classes are the distinct labels of train, in increasing
    order, so labels {0, 5} make two classes named "0" and "5" with ids 0 and 1 (never the
    phantom classes 1 to 4). String labels: the distinct labels of train, sorted. A label in
    val or test that train lacks is an error naming the file.
    """
    columns = {split: read_split(folder / f"{split}.csv") for split in SPLITS}
    train_labels = columns["train"][1]

    if all(_is_int(label) for label in train_labels):
        # "01" and "1" are the same id.
        columns = {
            split: (texts, [str(int(x)) if _is_int(x) else x for x in labels])
            for split, (texts, labels) in columns.items()
        }
        known = BENCHMARKS[name]["class_names"] if name in BENCHMARKS else None
        if known is not None:  # the ids index the benchmark's names
            class_names = tuple(known)
            lookup = {str(i): i for i in range(len(class_names))}
            classes = f"ids 0..{len(class_names) - 1} = {', '.join(class_names)}"
        else:  # the ids present in train, in increasing order
            present = sorted({int(x) for x in columns["train"][1]})
            class_names = tuple(str(i) for i in present)
            lookup = {label: i for i, label in enumerate(class_names)}
            classes = "ids " + ", ".join(class_names)
    else:
        # Class names: sorted, and a label's id is its index in that list.
        class_names = tuple(sorted(set(train_labels)))
        lookup = {label: i for i, label in enumerate(class_names)}
        classes = ", ".join(class_names)

    splits = {}
    for split, (texts, labels) in columns.items():
        path = folder / f"{split}.csv"
        if split == "train":  # only integer ids can be unknown here
            message = f"outside the known class list of {name!r} ({classes})"
        else:
            message = f"in the {split} split not seen in train ({classes})"
        splits[split] = Split(texts, _encode(labels, lookup, path, message), class_names)
    info = BENCHMARKS.get(name)
    if verify and info is not None:  # after the label checks, which name the bad row
        for split, (texts, labels) in columns.items():
            check_content(folder / f"{split}.csv", texts, labels, name=name,
                          fingerprint=info["fingerprint"][split], rows=info["rows"][split])
    return Dataset(name, splits["train"], splits["val"], splits["test"], class_names, folder)


# ---------------------------------------------------------------------------
# Finding a dataset


def _roots(data_dir) -> list[pathlib.Path]:
    """The folders to search, in order. A given folder that does not exist is an error."""
    roots = []
    given = [("data_dir", data_dir), ("GLOSS_LITE_DATA", os.environ.get("GLOSS_LITE_DATA") or None)]
    for where, folder in given:
        if folder is not None:
            folder = pathlib.Path(folder).expanduser()
            if not folder.is_dir():
                raise ValueError(f"{where} = {str(folder)!r} is not an existing folder")
            roots.append(folder)
    roots.append(PROJECT_DATA_DIR)
    installed = pathlib.Path(__file__).resolve().parent / "course_data"  # a non-editable install's copy
    if installed.is_dir():
        roots.append(installed)
    return roots


def _find(root: pathlib.Path, name: str):
    """The folder under ``root`` holding the three splits of ``name``, or None.

    A benchmark may also sit in its upstream folder (``MR``, ``R8``, ``R52``). A folder that
    holds some of the split files but not all is an error naming the missing ones (it is never
    skipped silently in favour of another copy or a download).
    """
    for folder in (name, BENCHMARKS[name]["folder"] if name in BENCHMARKS else None):
        if not folder:
            continue
        present = [split for split in SPLITS if (root / folder / f"{split}.csv").is_file()]
        if len(present) == len(SPLITS):
            return root / folder
        if present:
            missing = [f"{split}.csv" for split in SPLITS if split not in present]
            raise DatasetNotFoundError(
                f"{root / folder} holds {', '.join(f'{split}.csv' for split in present)} but not "
                f"{', '.join(missing)}; a dataset folder needs train.csv, val.csv and test.csv"
            )
    return None


def load_dataset(name: str = DEFAULT_DATASET, data_dir=None, *, verify: bool = True) -> Dataset:
    """Load dataset ``name`` (case-insensitive) as train / val / test splits.

    Searches ``data_dir``, then ``$GLOSS_LITE_DATA``, then the project's
    ``data/`` folder for ``<name>/train.csv``, ``val.csv`` and ``test.csv``;
    the benchmarks (``BENCHMARKS``: mr, r8, r52, ohsumed, 20ng) are downloaded
    if found nowhere. A benchmark's splits are checked against their published
    content (``check_content``); ``verify=False`` loads a modified local copy
    as it is.

    >>> train, val, test = load_dataset("reviews_sentiment")  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"the dataset name must be a non-empty string such as {DEFAULT_DATASET!r}, got {name!r}")
    name = name.lower()
    roots = _roots(data_dir)
    for root in roots:
        folder = _find(root, name)
        if folder is not None:
            return _read_folder(name, folder, verify)

    searched = ", ".join(str(root) for root in roots)
    if name not in BENCHMARKS:
        raise ValueError(
            f"unknown dataset {name!r}: no {name}/train.csv, val.csv, test.csv in {searched}. "
            f"Embedded datasets: {', '.join(EMBEDDED_DATASETS)}; "
            f"downloadable benchmarks: {', '.join(BENCHMARKS)}."
        )
    try:
        folder = download_benchmark(name)
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(f"dataset {name!r} is not in {searched}; {err}") from None
    return _read_folder(name, folder, verify=False)  # download_benchmark checked every file


# ---------------------------------------------------------------------------
# Downloading a benchmark


