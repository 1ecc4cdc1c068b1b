"""Is a difference between two methods larger than the test set's own sampling noise?

Taught in ``notebooks/07_reproducing_the_paper.ipynb``.

The seed interval (``gloss_lite.reproduction.results.paired_interval``) measures how much a difference moves
from one training seed to the next, on *one* test sample. A second source of noise is the test
sample itself: another draw of test documents from the same distribution would give other
accuracies. Three measures of it, each from which test documents a run got right:

- **McNemar's exact test** (one seed): of the test documents on which the two runs disagree,
  ``b`` are right only for the method and ``c`` only for CE. Under "equally accurate" each of
  the ``b + c`` is a fair coin, so the two-sided p-value is
  ``p = min(1, 2 P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)`` (``p = 1`` when
  ``b + c = 0``).
- **A paired bootstrap over test documents** (all seeds): with ``m_si`` and ``r_si`` in {0, 1} for
  "seed ``s`` of the method (of CE) got document ``i`` right", the seed-mean difference is
  ``d = mean_i D_i`` with ``D_i = mean_s (m_si - r_si)``. Resampling the ``n`` documents with
  replacement ``B`` times and taking the 2.5 and 97.5 percentiles of ``d`` gives its 95% interval
  under test-set sampling (the seeds held fixed).
- **Wilson's score interval** of one accuracy ``k / n``:
  ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z = 1.96``, for the
  single-run baselines.

Which documents a run got right travels in its results row as ``correct_bits``: the 0/1 vector
packed eight documents a byte (``numpy.packbits``) and written in base64.
"""

from __future__ import annotations

import base64
import math

import numpy as np

__all__ = [
    "pack_correct",
    "unpack_correct",
    "discordant_counts",
    "mcnemar_exact",
    "bootstrap_interval",
    "wilson_interval",
    "seconds_to_reach",
]


def pack_correct(correct) -> str:
    """A 0/1 (or bool) vector as base64 text of its packed bits."""
    bits = np.asarray(correct, dtype=bool)
    return base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")


def unpack_correct(text: str, n: int) -> np.ndarray:
    """The bool vector of length ``n`` that ``pack_correct`` wrote as ``text``."""
    packed = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    if len(packed) != math.ceil(n / 8):
        raise ValueError(f"correct_bits holds {len(packed) * 8} bits, not the {n} test documents of its run")
    return np.unpackbits(packed, count=n).astype(bool)


def discordant_counts(method_correct, reference_correct) -> tuple[int, int]:
    """``(b, c)``: documents right only for the method, right only for the reference."""
    method_correct = np.asarray(method_correct, dtype=bool)
    reference_correct = np.asarray(reference_correct, dtype=bool)
    if method_correct.shape != reference_correct.shape:
        raise ValueError(f"the runs scored different test sets ({method_correct.shape} and {reference_correct.shape})")
    return int((method_correct & ~reference_correct).sum()), int((~method_correct & reference_correct).sum())


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of ``b`` against ``c`` discordant documents."""
    from scipy import stats

    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * stats.binom.cdf(min(b, c), b + c, 0.5)))


def bootstrap_interval(method_correct: np.ndarray, reference_correct: np.ndarray, *, resamples: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Seed-mean accuracy difference and its paired-bootstrap interval over test documents.

    ``method_correct`` and ``reference_correct``: ``seeds x n`` 0/1 matrices, row ``s`` of each
    from the same seed. Returns ``(d, low, high)``.
    """
    method_correct = np.atleast_2d(np.asarray(method_correct, dtype=float))
    reference_correct = np.atleast_2d(np.asarray(reference_correct, dtype=float))
    if method_correct.shape != reference_correct.shape:
        raise ValueError(f"need the same seeds and documents, got {method_correct.shape} and {reference_correct.shape}")
    per_document = (method_correct - reference_correct).mean(axis=0)
    n = len(per_document)
    generator = np.random.default_rng(seed)
    means = np.concatenate([
        per_document[generator.integers(0, n, size=(min(250, resamples - start), n))].mean(axis=1)
        for start in range(0, resamples, 250)])
    tail = (1 - confidence) / 2 * 100
    return float(per_document.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's 95% score interval of the accuracy ``correct / n``."""
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n > 0, got {correct} of {n}")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def seconds_to_reach(curve, seconds, target: float) -> tuple[float, bool]:
    """Training seconds until ``curve`` first reaches ``target``, and whether it ever did.

    ``seconds[t]`` is epoch ``t``'s time. A curve that never reaches the target gives all its
    seconds, a lower bound (censored), and ``False``.
    """
    from .results import first_epoch_reaching

    reached = first_epoch_reaching(list(curve), target)
    epochs = len(curve) if reached is None else reached
    return float(sum(list(seconds)[:epochs])), reached is not None
