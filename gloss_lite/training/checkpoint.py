"""Checkpoints: the format, its checksum, the data fingerprints, atomic saving and resuming.

Used by ``gloss_lite.training.loop.fit`` (taught in ``notebooks/05_fine_tuning.ipynb``).

A checkpoint holds only tensors and plain values, loaded with ``weights_only=True``, with a
checksum over every byte and fingerprints of the training and validation data;
``load_checkpoint`` lists what makes one unusable (``CheckpointError``). The checkpoint folder
is checked writable before any work. ``fit`` writes one every ``checkpoint_every`` epochs and
after the last; when a resumed run equals an uninterrupted one is said in ``fit``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from ..data import Split
from ..files import replace_atomically
from .config import TrainConfig

__all__ = [
    "atomic_save",
    "BEST_NAME",
    "check_checkpoint_dir",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CheckpointError",
    "copy_weights",
    "data_fingerprint",
    "first_line",
    "load_checkpoint",
    "restore",
    "save_checkpoint",
]

CHECKPOINT_NAME = "last.pt"


BEST_NAME = "best.pt"


def _comparable(config: TrainConfig) -> dict:
    """The settings a checkpoint must agree on to be resumed (not bookkeeping like progress bars)."""
    settings = dataclasses.asdict(config)
    for key in ("epochs", "checkpoint_dir", "checkpoint_every", "progress", "device", "deterministic"):
        settings.pop(key)
    settings["lr_milestones"] = list(settings["lr_milestones"])
    return _plain(settings)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, damaged, or from another run."""


CHECKPOINT_FORMAT = 2  # the layout save_checkpoint writes; older files are refused, not misread


def _plain(value):
    """``value`` with tuples, paths, tensors and NumPy scalars turned into plain lists, strings and numbers.

    A checkpoint holds only tensors (the weights) and such plain values, so ``torch.load(...,
    weights_only=True)`` can read it without running any code from the file.
    """
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # a NumPy scalar
        return value.item()
    return value


def _split_fingerprint(split: Split) -> str:
    """SHA-256 of a split's class names, texts (each length-prefixed) and labels."""
    digest = hashlib.sha256(json.dumps(list(split.class_names)).encode())
    for text in split.texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little") + data)
    digest.update(split.labels.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(train: Split, val: Split) -> dict:
    """The fingerprints of the training and validation data a checkpoint was written for."""
    return {"train": _split_fingerprint(train), "val": _split_fingerprint(val)}


def _update_digest(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{tensor.dtype}{tuple(value.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _update_digest(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _update_digest(digest, item)
    else:
        digest.update(f"V{value!r}".encode())


def _checksum(state: dict) -> str:
    """SHA-256 over every tensor byte and value of a checkpoint, its "checksum" entry left out."""
    digest = hashlib.sha256()
    _update_digest(digest, {key: value for key, value in state.items() if key != "checksum"})
    return digest.hexdigest()


def check_checkpoint_dir(config: TrainConfig) -> Path | None:
    """The checkpoint file of ``config.checkpoint_dir`` (None without one), once the folder is known writable.

    Creates the folder and writes (and removes) a test file in it, so that a path that is a
    file, a read-only folder or a full disk fails before any model is loaded or trained.
    """
    if config.checkpoint_dir is None:
        return None
    folder = Path(config.checkpoint_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"checkpoint_dir {str(folder)!r} is a file, not a folder; choose a folder for the checkpoints")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ValueError(
            f"checkpoint_dir {str(folder)!r} is not writable ({type(error).__name__}: {error.strerror or error}); "
            "choose a folder you can write to, or checkpoint_dir=None"
        ) from None
    return folder / CHECKPOINT_NAME


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def load_checkpoint(path: Path, fingerprint: dict, config: TrainConfig, num_classes: int) -> dict | None:
    """The verified contents of the checkpoint at ``path``; None when there is none yet.

    Loaded with ``weights_only=True`` (a shared checkpoint cannot run code), then checked, each
    failure a ``CheckpointError`` that names the file and what to do: readable at all
    (truncated, empty or garbage files), written by this version, its checksum (any changed
    byte), its head's number of classes, the fingerprints of the training and validation data,
    the settings (the error lists those that differ), finite parameters, and no more finished
    epochs than ``config.epochs`` (a longer run is never returned as a shorter one; ask for at
    least as many epochs, or choose another ``checkpoint_dir``).
    """
    if not path.exists():
        return None
    fix = f"delete {path} to train from the start, or choose another checkpoint_dir"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path} is not a readable checkpoint ({first_line(error)}); it may be truncated, "
                              f"damaged or not a checkpoint at all: {fix}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint in the format this version writes: {fix}")
    if state.get("checksum") != _checksum(state):
        raise CheckpointError(f"{path} is damaged: its contents do not match the checksum written with them: {fix}")
    saved_classes = state["head"]["weight"].shape[0]
    if saved_classes != num_classes:
        raise CheckpointError(f"{path} holds a head for {saved_classes} classes, but this data has {num_classes}: "
                              f"it is from a run on other data; {fix}")
    for split in ("train", "val"):
        if state["data"][split] != fingerprint[split]:
            raise CheckpointError(f"{path} was written for other {split} documents (their texts or labels differ "
                                  f"from these); resume with the same data, or {fix}")
    settings = _comparable(config)
    changed = sorted(key for key in set(settings) | set(state["config"])
                     if settings.get(key) != state["config"].get(key))
    if changed:
        shown = ", ".join(f"{key} = {state['config'].get(key)!r} there, {settings.get(key)!r} now" for key in changed)
        raise CheckpointError(f"{path} was written by a run with another configuration ({shown}); resume with "
                              f"the same TrainConfig, or {fix}")
    weights = [*state["encoder"].values(), *state["head"].values()]
    if not all(torch.isfinite(t).all() for t in weights if t.is_floating_point()):
        raise CheckpointError(f"{path} holds NaN or infinite parameters (the run diverged); {fix}")
    finished = state["epoch"] + 1
    if finished > config.epochs:
        raise CheckpointError(
            f"{path} holds {finished} finished epochs but epochs={config.epochs} was asked for; a shorter run cannot "
            f"be recovered from it: ask for epochs >= {finished}, or choose another checkpoint_dir"
        )
    return state


def restore(state: dict, path: Path, encoder, head, optimizer, scheduler, scaler=None) -> tuple[list, int]:
    """Load a verified checkpoint into the model, optimiser, schedule (and fp16 gradient scaler).

    Returns ``(history, first epoch to run)``.
    """
    try:
        encoder.model.load_state_dict(state["encoder"])
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path} does not fit this model ({first_line(error)}); it was written for another encoder: resume "
            f"with the same model, or delete it or choose another checkpoint_dir"
        ) from None
    return [dict(row) for row in state["history"]], state["epoch"] + 1


def copy_weights(encoder, head) -> dict:
    """A CPU copy of the model's weights."""
    return {"encoder": {k: v.detach().cpu().clone() for k, v in encoder.model.state_dict().items()},
            "head": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}}


def atomic_save(state, path: Path) -> None:
    """``torch.save(state)`` to ``path`` atomically: an interruption leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda temporary: torch.save(state, temporary))


def save_checkpoint(path: Path, run, history, epoch, best, fingerprint) -> None:
    """Write ``run``'s state after ``epoch`` atomically: only tensors and plain values, with a checksum.

    ``run`` is the ``gloss_lite.training.step.TrainingRun``: its model, optimiser, schedule,
    sigma, configuration and fp16 gradient scaler.
    """
    encoder, head = run.model
    state = {
        "format": CHECKPOINT_FORMAT,
        "encoder": encoder.model.state_dict(), "head": head.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": _plain(run.scheduler.state_dict()), "history": _plain(history), "epoch": epoch,
        "sigma": _plain(run.sigma), "best": _plain(best), "config": _comparable(run.config), "data": fingerprint,
        "scaler": _plain(run.scaler.state_dict()) if run.scaler is not None else {},
    }
    state["checksum"] = _checksum(state)
    atomic_save(state, path)
