"""The files behind a dataset: reading a split's CSV, the five benchmarks' registry and checks, the download.

``BENCHMARKS`` records each benchmark's folder, classes, rows per split, the SHA-256 of the
authors' published files and a content fingerprint per split (``content_fingerprint``, which
does not depend on the CSV's layout). ``download_benchmark`` fetches a benchmark from the
authors' public repository with pooch, checks it and caches it; ``check_content`` is the check
every copy passes, downloaded or local. ``gloss_lite.data.load_dataset`` calls both. Taught in
``notebooks/00_overview.ipynb``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import os
import pathlib
from typing import TypedDict

import pooch
import requests

__all__ = ["BENCHMARKS", "BenchmarkInfo", "DEFAULT_BASE_URL", "PROJECT_DATA_DIR", "SPLITS", "DatasetNotFoundError",
           "check_content", "content_fingerprint", "download_benchmark", "read_split"]

PROJECT_DATA_DIR = pathlib.Path(__file__).resolve().parents[1] / "data"


SPLITS = ("train", "val", "test")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is in none of the searched folders and could not be downloaded."""


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
    records: list[tuple[int, int, list[str]]] = []  # (row, line, fields)
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


DEFAULT_BASE_URL = "https://raw.githubusercontent.com/saditya13/G-Loss-LoG/main/data/"


class BenchmarkInfo(TypedDict):
    """One entry of ``BENCHMARKS``: what the authors published for a benchmark."""

    folder: str
    class_names: tuple[str, ...] | None
    rows: dict[str, int]
    sha256: dict[str, str | None]
    fingerprint: dict[str, str]


# The benchmarks used in the G-Loss paper, as published by its authors.
# "folder": the folder name upstream; "class_names": the names of the integer
# ids used in the CSVs (None: the CSVs already hold class names);
# "rows": the number of documents in each split;
# "sha256": the checksum of each upstream split file, in pooch's format (None:
# not known, the file is checked by its fingerprint only);
# "fingerprint": each split's content_fingerprint (SHA-256 hex).
BENCHMARKS: dict[str, BenchmarkInfo] = {
    "mr": {
        "folder": "MR",
        "class_names": ("negative", "positive"),
        "rows": {"train": 6397, "val": 711, "test": 3554},
        "sha256": {
            "train": "sha256:1fb1d9be15efc6bca4af4f99f8e26f0dadcdb6b8106c6dd773bc5953912bec33",
            "val": "sha256:4d811ba22c1beef3f66874dbe0a513a667bdb071f57b658395be5fbfa32d787d",
            "test": "sha256:07e64cae2674575200c13f444188d3907fe464158bcdf955252b23e639537a77",
        },
        "fingerprint": {
            "train": "7b47d6f1e4cd6533e5fc3f65990ea17cb6a0aae3923e49a46c95ecd94fc06f97",
            "val": "d01ba736c1ff81a067d129e7b9339db52f09343ecca238791a66636c9d910fb1",
            "test": "56296fba51bb01e3081b8d44350aa9deee2b0948b8cbee5eeaab39400e35876f",
        },
    },
    "r8": {
        "folder": "R8",
        "class_names": ("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"),
        "rows": {"train": 4936, "val": 549, "test": 2189},
        "sha256": {
            "train": "sha256:38403910f8facfb509dd7db6aa2f117f4ed84ba194df922e3366688b1ccca143",
            "val": "sha256:af2da6626ab1b11933452cebcc1f26c0d5c09a807b6a78fc5e216ecf4f37dde0",
            "test": "sha256:083f6d98c42ad906f9c02243ac676277704599b1453bc1307af78f8f65f0fe6b",
        },
        "fingerprint": {
            "train": "9fe31558439c4f991a958351da486b05077ac6dc5ea0be1dee4a934d1d5b814d",
            "val": "f6d9b19b247807001d70659dd84708b3ea527773146a0bc79e0e52358f640f86",
            "test": "1d97b8fd5cc324a2cd770722c882abff1a44922447e418fc0ed0f52fcb27a8d5",
        },
    },
    "r52": {
        "folder": "R52",
        "class_names": None,
        "rows": {"train": 5865, "val": 667, "test": 2568},
        "sha256": {
            "train": "sha256:986f41ddf39dc360ae9619da19e9632fd4779bdc5278de94f846bd74f226c9ca",
            "val": "sha256:77b1f22037e91519c9e1cdd88f2caa35a30dd93a6167dd30816f7ff766ee0789",
            "test": "sha256:a8f6d82ca86b758c697dde6985ba938a607d2831f9f827b869172027f5618d37",
        },
        "fingerprint": {
            "train": "96e0512579fc3d223f996a8a674f2acdd80cd43deec262ce17a8a92342f413ac",
            "val": "d66d34e720f80c7d3415d9330a7a4c6f46340ca7c542ad89277b8f16e0063867",
            "test": "17feec4207c0164a6aa4823dd85885944dd56152de0728dbee690177c78555fe",
        },
    },
    "ohsumed": {
        "folder": "ohsumed",
        # id = MeSH disease-category code number - 1; the code is what the literature cites
        "class_names": (
            "C01 bacterial infections and mycoses",
            "C02 virus diseases",
            "C03 parasitic diseases",
            "C04 neoplasms",
            "C05 musculoskeletal",
            "C06 digestive system",
            "C07 stomatognathic",
            "C08 respiratory tract",
            "C09 otorhinolaryngologic",
            "C10 nervous system",
            "C11 eye",
            "C12 urologic and male genital",
            "C13 female genital and pregnancy complications",
            "C14 cardiovascular",
            "C15 hemic and lymphatic",
            "C16 neonatal diseases and abnormalities",
            "C17 skin and connective tissue",
            "C18 nutritional and metabolic",
            "C19 endocrine",
            "C20 immunologic",
            "C21 disorders of environmental origin",
            "C22 animal diseases",
            "C23 pathological conditions, signs and symptoms",
        ),
        "rows": {"train": 3021, "val": 336, "test": 4043},
        "sha256": {
            "train": "sha256:30ec08bd5afa83b56e567957016444f682c7e369a4e564341b9565dcfbccc057",
            "val": "sha256:ab2823f7498c60f60b40e40f3eaf5950d225b212cbcdf803d29b9b43598a0e15",
            "test": None,
        },
        "fingerprint": {
            "train": "5f24714f7620ed1125b96e3238b0e975f8597b5f1951968d03641bffd344609d",
            "val": "7de361cc2c1799915e7bba6c983bf4fec41f57a3a07615adcec38c3b20bf2054",
            "test": "bc998603f917370565536d625d15e07251e9334dc82d2b7de7993c5f5813e0c8",
        },
    },
    "20ng": {
        "folder": "20ng",
        "class_names": (
            "alt.atheism",
            "comp.graphics",
            "comp.os.ms-windows.misc",
            "comp.sys.ibm.pc.hardware",
            "comp.sys.mac.hardware",
            "comp.windows.x",
            "misc.forsale",
            "rec.autos",
            "rec.motorcycles",
            "rec.sport.baseball",
            "rec.sport.hockey",
            "sci.crypt",
            "sci.electronics",
            "sci.med",
            "sci.space",
            "soc.religion.christian",
            "talk.politics.guns",
            "talk.politics.mideast",
            "talk.politics.misc",
            "talk.religion.misc",
        ),
        "rows": {"train": 10182, "val": 1132, "test": 7532},
        "sha256": {
            "train": None,
            "val": "sha256:9536b91dada5104f79550a452f8d3c5c115253026626f5ff0b192c76bd0efccc",
            "test": None,
        },
        "fingerprint": {
            "train": "bb8fee096e120237248a2ffe8025d79ce40878701eb865f6839d74842adc70a1",
            "val": "b679122a975c637bddcc76b9c1c7e2ab5c1a00bb4c6dc9e0e6120595d97ab3d1",
            "test": "deef3e767d76a25864321c7db91635ea8d6b732a1f64d30d712ce590fb2f1122",
        },
    },
}


def content_fingerprint(texts, labels) -> str:
    """SHA-256 (hex) of a split's content, independent of the CSV's layout.

    One line ``label<TAB>text`` per document (the label as written in the CSV,
    e.g. ``"3"`` or ``"earn"``), the lines sorted and joined by a newline (no
    final newline), encoded as UTF-8. Row order, quoting, line endings of the
    file and extra columns do not change it; a missing, added or edited row does.
    """
    lines = sorted(f"{label}\t{text}" for text, label in zip(texts, labels, strict=True))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def check_content(path, texts, labels, *, name, fingerprint, rows=None, downloaded=False) -> None:
    """Raise ValueError unless ``content_fingerprint(texts, labels) == fingerprint``.

    ``path`` is the file the split was read from, ``name`` the benchmark and
    ``rows`` its published number of documents; the error names all three, the
    rows found, and where to put a correct local copy.
    """
    found = content_fingerprint(texts, labels)
    if found == fingerprint:
        return
    expected_rows = f"expected {rows} rows, found {len(texts)}" if rows is not None else f"{len(texts)} rows"
    if downloaded:
        what, escape = "the downloaded file differs from the published split (removed from the cache)", ""
    else:
        what = "this copy differs from the published split"
        escape = f", or call load_dataset({name!r}, verify=False) to load this copy as it is"
    raise ValueError(
        f"{path}: {what}: {expected_rows}; content fingerprint {found}, expected {fingerprint}. "
        f"Put the published files as <folder>/{name}/train.csv, val.csv, test.csv "
        f"and set GLOSS_LITE_DATA=<folder>{escape}."
    )


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


def download_benchmark(
    name, *, cache_dir=None, base_url=None, registry=None, fingerprints=None, rows=None
) -> pathlib.Path:
    """Download benchmark ``name`` (one of ``BENCHMARKS``) and return its folder.

    The folder holds train.csv, val.csv and test.csv as published upstream.
    Files are fetched from ``base_url`` (default: ``$GLOSS_LITE_DATA_URL``,
    else the authors' GitHub repository) into ``cache_dir`` (default:
    ``$GLOSS_LITE_CACHE``, else the user cache folder) and checked against
    ``registry``, a dict split -> "sha256:<hex>" (default: from BENCHMARKS).
    A cached file whose checksum is wrong is fetched again.

    A split whose checksum is None (not published) is fetched unchecked and,
    once parsed, checked against ``fingerprints[split]`` (default: from
    BENCHMARKS; see ``content_fingerprint``), with ``rows`` (split -> count)
    for the error message; a file that fails is removed from the cache.

    Raises DatasetNotFoundError if the download fails, and ValueError if the
    server sends a file whose checksum or content does not match.
    """
    name = name.lower()
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    folder = BENCHMARKS[name]["folder"]
    registry = BENCHMARKS[name]["sha256"] if registry is None else registry
    fingerprints = BENCHMARKS[name].get("fingerprint", {}) if fingerprints is None else fingerprints
    rows = BENCHMARKS[name].get("rows", {}) if rows is None else rows
    base_url = base_url or os.environ.get("GLOSS_LITE_DATA_URL") or DEFAULT_BASE_URL
    cache_dir = cache_dir or os.environ.get("GLOSS_LITE_CACHE") or pooch.os_cache("gloss_lite")

    store = pooch.create(
        path=cache_dir,
        base_url=base_url,
        registry={f"{folder}/{split}.csv": registry.get(split) for split in SPLITS},
    )
    for split in SPLITS:
        fname = f"{folder}/{split}.csv"
        url = store.get_url(fname)
        try:
            with _quiet_pooch():
                path = store.fetch(fname)
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
        if registry.get(split) is None and fingerprints.get(split) is not None:
            try:
                check_content(path, *read_split(path), name=name, fingerprint=fingerprints[split],
                              rows=rows.get(split), downloaded=True)
            except ValueError:
                pathlib.Path(path).unlink()  # unchecked by pooch: fetch it again next time
                raise
    return pathlib.Path(store.abspath) / folder
