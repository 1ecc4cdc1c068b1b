"""G-Loss-O: an Optuna search over sigma, gamma, lambda and the learning rate.

Taught in ``notebooks/04_sigma_estimation.ipynb``; ``AUTHORS_TUNING``
(``gloss_lite.training.config``) holds the authors' search space.
"""

from __future__ import annotations

import dataclasses

from ..data import Split
from .config import TrainConfig
from .loop import fit

__all__ = ["tune"]


def tune(
    train: Split,
    val: Split,
    config: TrainConfig,
    *,
    n_trials: int = 10,
    search_space: dict | None = None,
    make_encoder=None,
    sampler_seed: int | None = None,
):
    """G-Loss-O: an Optuna (TPE) search over sigma, gamma, lambda and lr on validation macro-F1.

    Each trial trains a fresh encoder with ``config`` and the trial's values; its score is the
    best validation macro-F1 of the head over the epochs. ``search_space`` maps a name (sigma,
    gamma, lam, lr, temperature) to a list of choices or to ``(low, high, log)`` or
    ``(low, high, log, step)``; the defaults are below, and ``AUTHORS_TUNING`` holds the
    authors' space, trial count and sampler seed (``tune(..., **AUTHORS_TUNING)``). The TPE
    sampler is seeded with ``sampler_seed`` (default: ``config.seed``). ``make_encoder()``
    builds each trial's fresh encoder (default: ``load_encoder`` with the config's model).
    Returns ``(best_config, study)``.
    """
    import optuna

    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    space = {"sigma": (0.05, 2.0, True), "gamma": (0.3, 0.9, False), "lam": (0.1, 0.9, False), "lr": (1e-5, 1e-4, True)}
    space.update(search_space or {})
    unknown = set(space) - {"sigma", "gamma", "lam", "lr", "temperature"}
    if unknown:
        raise ValueError(
            f"search_space names unknown settings {sorted(unknown)}; use sigma, gamma, lam, lr, temperature")
    base = dataclasses.replace(config, checkpoint_dir=None, progress=False, lpa_eval=False)
    base.validate(len(train.class_names))

    def suggest(trial, name, spec):
        if isinstance(spec, list):
            return trial.suggest_categorical(name, spec)
        low, high, log, *step = spec
        return trial.suggest_float(name, low, high, log=log, step=step[0] if step else None)

    def objective(trial):
        values = {name: suggest(trial, name, spec) for name, spec in space.items()}
        encoder = make_encoder() if make_encoder else None
        result = fit(train, val, dataclasses.replace(base, **values), encoder=encoder)
        return max(row["val_macro_f1"] for row in result.history)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = config.seed if sampler_seed is None else sampler_seed
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    return dataclasses.replace(config, **study.best_params), study

