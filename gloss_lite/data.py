"""Load a text-classification dataset as train / val / test splits.

A dataset is a folder ``<root>/<name>/`` holding ``train.csv``, ``val.csv`` and
``test.csv``; each CSV has a header and the columns ``text`` and ``label``
(other columns, such as an unnamed row index, are ignored). ``load_dataset``
looks for the folder in these roots, in order:

1. the ``data_dir`` argument, if given;
2. the folder named by the environment variable ``GLOSS_LITE_DATA``, if set;
3. the project's own ``data/`` folder (``PROJECT_DATA_DIR``), which ships the
   small embedded datasets ``reviews_sentiment`` and ``reviews_topic``;
4. for the paper's benchmarks ``mr``, ``r8`` and ``r52`` only: a download from
   the authors' public GitHub repository, checked against pinned SHA-256 sums
   and cached on disk (see ``download_benchmark``).

Labels are either integer ids (``0, 1, ...``) or class names. The train split
defines the classes (the labels it holds; see ``_read_folder``); val and test
must use the same ones. A local copy of a benchmark whose splits do not have the
published number of rows (``BENCHMARKS[name]["rows"]``) is refused.

Taught in notebooks/00_overview.ipynb.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import pathlib
import re
from dataclasses import dataclass

import pooch
import requests
import torch

PROJECT_DATA_DIR = pathlib.Path(__file__).resolve().parents[1] / "data"
DEFAULT_DATASET = "reviews_sentiment"
EMBEDDED_DATASETS = ("reviews_sentiment", "reviews_topic")
SPLITS = ("train", "val", "test")
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/saditya13/G-Loss-LoG/main/data/"

# The benchmarks used in the G-Loss paper, as published by its authors.
# "folder": the folder name upstream; "class_names": the names of the integer
# ids used in the CSVs (None: the CSVs already hold class names);
# "sha256": the checksum of each upstream split file, in pooch's format;
# "rows": the number of documents in each split, checked on every local copy.
BENCHMARKS = {
    "mr": {
        "folder": "MR",
        "class_names": ("negative", "positive"),
        "sha256": {
            "train": "sha256:1fb1d9be15efc6bca4af4f99f8e26f0dadcdb6b8106c6dd773bc5953912bec33",
            "val": "sha256:4d811ba22c1beef3f66874dbe0a513a667bdb071f57b658395be5fbfa32d787d",
            "test": "sha256:07e64cae2674575200c13f444188d3907fe464158bcdf955252b23e639537a77",
        },
        "rows": {"train": 6397, "val": 711, "test": 3554},
    },
    "r8": {
        "folder": "R8",
        "class_names": ("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"),
        "sha256": {
            "train": "sha256:38403910f8facfb509dd7db6aa2f117f4ed84ba194df922e3366688b1ccca143",
            "val": "sha256:af2da6626ab1b11933452cebcc1f26c0d5c09a807b6a78fc5e216ecf4f37dde0",
            "test": "sha256:083f6d98c42ad906f9c02243ac676277704599b1453bc1307af78f8f65f0fe6b",
        },
        "rows": {"train": 4936, "val": 549, "test": 2189},
    },
    "r52": {
        "folder": "R52",
        "class_names": None,
        "sha256": {
            "train": "sha256:986f41ddf39dc360ae9619da19e9632fd4779bdc5278de94f846bd74f226c9ca",
            "val": "sha256:77b1f22037e91519c9e1cdd88f2caa35a30dd93a6167dd30816f7ff766ee0789",
            "test": "sha256:a8f6d82ca86b758c697dde6985ba938a607d2831f9f827b869172027f5618d37",
        },
        "rows": {"train": 5865, "val": 667, "test": 2568},
    },
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is in none of the searched folders and could not be downloaded."""


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


def read_split(path) -> tuple[list[str], list[str]]:
    """Read one split CSV and return its texts and its labels, both as strings.

    The file is UTF-8 text (a byte-order mark is allowed) with a header that holds the columns
    ``text`` and ``label``; other columns, such as an unnamed row index, are ignored. Every cell
    is kept as written (a label ``1`` stays ``"1"``, a text ``null`` stays ``"null"``); blank
    lines are skipped. A text that contains a comma, a quote or a line break must be quoted,
    ``"like this, say"``, with inner quotes doubled (what ``csv`` and ``pandas.to_csv`` write).

    Raises ValueError, naming the file, if the file is not UTF-8, is empty, has a missing
    column, has no rows, has a row with more or fewer fields than the header (an unquoted
    comma: the error names the row and line), has an unclosed quote, or has an empty text or
    label. Rows are counted from 1 after the header; lines from 1 at the top of the file.
    """
    path = pathlib.Path(path)
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long documents (20ng) exceed the default
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: not UTF-8 text (byte {err.start}, on line {line}, is {raw[err.start:err.start + 1]!r}); "
            "save the file as UTF-8, e.g. pandas.read_csv(path, encoding='latin-1').to_csv(path, index=False)"
        ) from None
    if not content.strip():
        raise ValueError(f"{path}: the file is empty")
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    records = []  # (row, line, fields)
    try:
        header = next(reader)
        for fields in reader:
            if fields:  # a blank line
                records.append((len(records) + 1, reader.line_num, fields))
    except csv.Error as err:
        raise ValueError(
            f"{path}: unreadable CSV near line {reader.line_num} ({err}); an opening quote without its "
            'closing quote swallows the rest of the file: close it, or double a quote inside a text ("")'
        ) from None
    missing = [column for column in ("text", "label") if column not in header]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; a split needs the columns "
            f"'text' and 'label', found {header}"
        )
    repeated = sorted({column for column in ("text", "label") if header.count(column) > 1})
    if repeated:
        raise ValueError(f"{path}: the column(s) {repeated} appear more than once in the header {header}")
    if not records:
        raise ValueError(f"{path}: no rows (only a header)")
    text_at, label_at = header.index("text"), header.index("label")
    texts, labels = [], []
    for row, line, fields in records:
        if len(fields) != len(header):
            raise ValueError(
                f"{path}: row {row} (line {line}) has {len(fields)} field(s), the header has {len(header)} "
                f"({','.join(header)}); a text that contains a comma must be quoted, "
                f'"like this, say" (rows counted from 1 after the header)'
            )
        for column, value in (("text", fields[text_at]), ("label", fields[label_at])):
            if not value.strip():
                raise ValueError(
                    f"{path}: empty {column} in row {row} (line {line}; rows counted from 1 after the header)"
                )
        texts.append(fields[text_at])
        labels.append(fields[label_at].strip())
    return texts, labels


def _is_int(label: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", label) is not None


def _encode(labels, lookup, path, message) -> torch.Tensor:
    """Map label strings to ids with ``lookup``; unknown labels raise ValueError."""
    unknown = sorted(set(label for label in labels if label not in lookup))
    if unknown:
        shown = ", ".join(repr(label) for label in unknown[:10])
        raise ValueError(f"{path}: label(s) {shown} {message}")
    return torch.tensor([lookup[label] for label in labels], dtype=torch.int64)


def _check_rows(name: str, folder: pathlib.Path, columns: dict) -> None:
    """Compare each split's row count with the published size of benchmark ``name``, if known."""
    sizes = BENCHMARKS.get(name, {}).get("rows")
    if not sizes:
        return
    for split, (texts, _) in columns.items():
        expected = sizes.get(split)
        if expected is not None and len(texts) != expected:
            raise ValueError(
                f"{folder / f'{split}.csv'}: {len(texts)} rows, but the published {name} {split} split has "
                f"{expected}; this copy is incomplete or another file. Put the complete split there "
                f"(as {name}/train.csv, val.csv, test.csv under GLOSS_LITE_DATA), or remove {folder} "
                f"so that load_dataset({name!r}) downloads the checked files"
            )


def _read_folder(name: str, folder: pathlib.Path) -> Dataset:
    """Read ``folder/{train,val,test}.csv`` into a Dataset; train defines the classes.

    Integer labels of a benchmark with known class names (``mr``, ``r8``) are ids into that
    list. Other integer labels: the classes are the distinct labels of train, in increasing
    order, so labels {0, 5} make two classes named "0" and "5" with ids 0 and 1 (never the
    phantom classes 1 to 4). String labels: the distinct labels of train, sorted. A label in
    val or test that train lacks is an error naming the file.
    """
    columns = {split: read_split(folder / f"{split}.csv") for split in SPLITS}
    _check_rows(name, folder, columns)
    train_labels = columns["train"][1]

    if all(_is_int(label) for label in train_labels):
        # "01" and "1" are the same id.
        columns = {
            split: (texts, [str(int(x)) if _is_int(x) else x for x in labels])
            for split, (texts, labels) in columns.items()
        }
        known = BENCHMARKS.get(name, {}).get("class_names")
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
    return roots


def _find(root: pathlib.Path, name: str):
    """The folder under ``root`` holding the three splits of ``name``, or None.

    A benchmark may also sit in its upstream folder (``MR``, ``R8``, ``R52``). A folder that
    holds some of the split files but not all is an error naming the missing ones (it is never
    skipped silently in favour of another copy or a download).
    """
    for folder in (name, BENCHMARKS.get(name, {}).get("folder")):
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


def load_dataset(name: str = DEFAULT_DATASET, data_dir=None) -> Dataset:
    """Load dataset ``name`` (case-insensitive) as train / val / test splits.

    Searches ``data_dir``, then ``$GLOSS_LITE_DATA``, then the project's
    ``data/`` folder for ``<name>/train.csv``, ``val.csv`` and ``test.csv``;
    the benchmarks ``mr``, ``r8`` and ``r52`` are downloaded if found nowhere.

    >>> train, val, test = load_dataset("reviews_sentiment")  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"the dataset name must be a non-empty string such as {DEFAULT_DATASET!r}, got {name!r}")
    name = name.lower()
    roots = _roots(data_dir)
    for root in roots:
        folder = _find(root, name)
        if folder is not None:
            return _read_folder(name, folder)

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
    return _read_folder(name, folder)


# ---------------------------------------------------------------------------
# Downloading a benchmark


@contextlib.contextmanager
def _quiet_pooch():
    """Silence pooch's "Downloading file ..." log lines while inside the block."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def download_benchmark(name, *, cache_dir=None, base_url=None, registry=None) -> pathlib.Path:
    """Download benchmark ``name`` ("mr", "r8" or "r52") and return its folder.

    The folder holds train.csv, val.csv and test.csv as published upstream.
    Files are fetched from ``base_url`` (default: ``$GLOSS_LITE_DATA_URL``,
    else the authors' GitHub repository) into ``cache_dir`` (default:
    ``$GLOSS_LITE_CACHE``, else the user cache folder) and checked against
    ``registry``, a dict split -> "sha256:<hex>" (default: from BENCHMARKS).
    A cached file whose checksum is wrong is fetched again.

    Raises DatasetNotFoundError if the download fails, and ValueError if the
    server sends a file whose checksum does not match.
    """
    name = name.lower()
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    folder = BENCHMARKS[name]["folder"]
    registry = BENCHMARKS[name]["sha256"] if registry is None else registry
    base_url = base_url or os.environ.get("GLOSS_LITE_DATA_URL") or DEFAULT_BASE_URL
    cache_dir = cache_dir or os.environ.get("GLOSS_LITE_CACHE") or pooch.os_cache("gloss_lite")

    store = pooch.create(
        path=cache_dir,
        base_url=base_url,
        registry={f"{folder}/{split}.csv": registry[split] for split in SPLITS},
    )
    for split in SPLITS:
        fname = f"{folder}/{split}.csv"
        url = store.get_url(fname)
        try:
            with _quiet_pooch():
                store.fetch(fname)
        except requests.exceptions.RequestException as err:
            raise DatasetNotFoundError(
                f"the download of {name!r} from {url} into {store.abspath} failed "
                f"({type(err).__name__}: {err}). To use a local copy instead, put the files as "
                f"<folder>/{name}/train.csv, val.csv, test.csv (CSV with the columns text,label) "
                f"and set GLOSS_LITE_DATA=<folder>, or put them in {PROJECT_DATA_DIR / name}/."
            ) from None
        except ValueError as err:
            if "hash" not in str(err):  # pooch's words for a checksum mismatch
                raise
            raise ValueError(
                f"the SHA-256 checksum of {url} did not match the expected "
                f"{registry[split]}: the server sent a different file ({err})"
            ) from None
    return pathlib.Path(store.abspath) / folder
