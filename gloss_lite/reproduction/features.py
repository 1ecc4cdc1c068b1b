"""Frozen features: every document of a dataset embedded once by the offline encoder, kept on disk.

Taught in ``notebooks/07_reproducing_the_paper.ipynb`` (the frozen-encoder tier).

``frozen_features("r8")`` embeds the train, val and test texts of R8 with all-MiniLM-L6-v2
(``gloss_lite.encoders.load_encoder``, mean pooling, no gradient) and returns one float32
``n x 384`` matrix per split. The matrices are stored in a cache folder outside the project
(``$GLOSS_LITE_CACHE``, else ``~/.cache/gloss-lite/features``) under a key

    key = SHA-256(data, model, pooling, max_length)

where *data* is the ``gloss_lite.benchmark_files.content_fingerprint`` of each split (every text and label),
*model* the SHA-256 of the model folder's weight, configuration and tokenizer files (or the model's
name and revision for a Hub model), and *pooling* and *max_length* the encoder's settings. A change
to any of them gives another key, so stale features are never read: they are recomputed. A file is
written to a temporary name and renamed, so an interrupted run never leaves half a file.

Each distinct text is embedded once (a text in two splits gets one row per split, the same
vector). ``max_length`` defaults to 128 tokens for every benchmark: Ohsumed and 20NG lose the rest
of most documents (as in the paper's fine-tuning), while MR's longest sentence has 73 tokens and is
never cut (batches are padded to their longest text only, so 128 costs MR nothing over 64).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

from ..benchmark_files import SPLITS, content_fingerprint
from ..data import Dataset, load_dataset
from ..encoders import DEFAULT_MODEL_NAME, POOLINGS, TOKENIZER_FILES, WEIGHT_FILES, default_model_path, load_encoder
from ..files import replace_atomically

__all__ = [
    "cache_folder",
    "model_fingerprint",
    "data_fingerprint",
    "feature_key",
    "FrozenFeatures",
    "check_settings",
    "frozen_features",
    "main",
]

FORMAT = 1  # bump when the stored layout changes: every older file then misses its key
MAX_LENGTH = 128
MODEL_FILES = ("config.json",) + WEIGHT_FILES + TOKENIZER_FILES + ("tokenizer_config.json", "special_tokens_map.json")


def cache_folder(folder: str | Path | None = None) -> Path:
    """``folder``, else ``$GLOSS_LITE_CACHE``, else ``~/.cache/gloss-lite/features``."""
    if folder is not None:
        return Path(folder).expanduser()
    from_environment = os.environ.get("GLOSS_LITE_CACHE", "").strip()
    if from_environment:
        return Path(from_environment).expanduser()
    return Path.home() / ".cache" / "gloss-lite" / "features"


def model_fingerprint(model: str | Path | None = None, revision: str | None = None) -> str:
    """SHA-256 of a model folder's files that shape its embeddings; ``name@revision`` for a Hub name.

    ``None`` is the offline all-MiniLM-L6-v2 folder. The folder's ``config.json``, weights and
    tokenizer files are hashed (name and content), so new weights under the same name give
    another fingerprint. A Hub name cannot be hashed without its files: its fingerprint is the
    name and ``revision``, which must then be pinned to notice a change.
    """
    folder = default_model_path() if model is None else Path(str(model)).expanduser()
    if not folder.is_dir():
        return f"{model}@{revision or 'unpinned'}"
    digest = hashlib.sha256()
    names = sorted(name for name in MODEL_FILES if (folder / name).is_file())
    if not names:
        raise ValueError(f"model folder {str(folder)!r} holds none of {', '.join(MODEL_FILES[:3])}, ...; "
                         "give the folder that holds config.json and the weights")
    for name in names:
        digest.update(name.encode() + b"\0")
        with (folder / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def data_fingerprint(dataset: Dataset) -> dict:
    """``content_fingerprint`` of each split, labels written as their class names."""
    return {name: content_fingerprint(split.texts, [split.class_names[i] for i in split.labels.tolist()])
            for name, split in zip(SPLITS, dataset)}


def feature_key(data: dict, model: str, pooling: str, max_length: int) -> str:
    """The cache key: SHA-256 of the data's and the model's fingerprints, the pooling and the length."""
    settings = {"format": FORMAT, "data": data, "model": model, "pooling": pooling, "max_length": max_length}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenFeatures:
    """A dataset's embeddings, one ``n x d`` float32 matrix per split, with what made them."""

    dataset: Dataset
    features: dict  # split name -> tensor, rows in the split's order
    key: str
    seconds: float  # the embedding's wall time when it was computed (not the cache read)
    settings: dict  # model, pooling, max_length, device, torch
    from_cache: bool

    def __getitem__(self, split: str) -> torch.Tensor:
        return self.features[split]


def check_settings(pooling: str, max_length) -> None:
    """Raise ``ValueError`` for a pooling outside ``POOLINGS`` or a ``max_length`` below 2."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2 (tokens, [CLS] and [SEP] included), got {max_length!r}")


def frozen_features(dataset: str | Dataset, *, data_dir=None, model: str | Path | None = None,
                    revision: str | None = None, pooling: str = "mean", max_length: int = MAX_LENGTH,
                    cache: str | Path | None = None, device: str = "auto", encoder=None) -> FrozenFeatures:
    """The embeddings of every split of ``dataset`` (a name for ``load_dataset``, or a loaded Dataset).

    Read from the cache when a file with the same key is there, else computed and stored.
    ``encoder``: an already loaded ``Encoder`` to use on a miss (it must be ``model``'s, with
    ``pooling`` and ``max_length``; tests pass a small one).
    """
    check_settings(pooling, max_length)
    data = load_dataset(dataset, data_dir) if isinstance(dataset, str) else dataset
    key = feature_key(data_fingerprint(data), model_fingerprint(model, revision), pooling, max_length)
    path = cache_folder(cache) / f"{data.name}-{key[:24]}.pt"
    stored = _load(path)
    if stored is not None and stored.get("key") == key:
        return FrozenFeatures(data, stored["features"], key, stored["seconds"], stored["settings"], True)
    started = time.perf_counter()
    encoder = encoder or load_encoder(model, pooling=pooling, max_length=max_length, device=device)
    texts = sorted({text for split in data for text in split.texts})
    rows = {text: row for row, text in enumerate(texts)}
    vectors = encoder.embed(texts, progress=False)
    features = {name: vectors[torch.tensor([rows[t] for t in split.texts], dtype=torch.long)].contiguous()
                for name, split in zip(SPLITS, data)}
    seconds = time.perf_counter() - started
    settings = {"model": str(model or DEFAULT_MODEL_NAME), "pooling": pooling, "max_length": max_length,
                "device": str(encoder.device), "torch": str(torch.__version__), "distinct_texts": len(texts)}
    state = {"key": key, "features": features, "seconds": seconds, "settings": settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda temporary: torch.save(state, temporary))
    return FrozenFeatures(data, features, key, seconds, settings, False)


def _load(path: Path) -> dict | None:
    """The stored features at ``path``; None when there is no file or it cannot be read (then recomputed)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged file is a cache miss, not an error
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Embed datasets once with the offline encoder and cache them.")
    parser.add_argument("--datasets", nargs="+", default=["mr", "r8", "r52", "ohsumed", "20ng"])
    parser.add_argument("--data-dir", help="folder with the datasets (default: GLOSS_LITE_DATA, then a download)")
    parser.add_argument("--cache", help="cache folder (default: GLOSS_LITE_CACHE, then ~/.cache/gloss-lite/features)")
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH)
    args = parser.parse_args(argv)
    try:
        check_settings("mean", args.max_length)
    except ValueError as error:
        parser.error(str(error))
    for name in args.datasets:
        found = frozen_features(name, data_dir=args.data_dir, cache=args.cache, max_length=args.max_length)
        origin = "cached" if found.from_cache else "computed"
        sizes = ", ".join(f"{split} {len(found[split])}" for split in SPLITS)
        print(f"{name}: {sizes}; embedded in {found.seconds:.0f} s ({origin}), key {found.key[:12]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
