"""ETran's two per-model parts, an energy score and an LDA score, and their combination.

``etran_energy`` (no labels) averages the energy ``logsumexp_d x_d`` of the ``percent`` % of
samples with the lowest energy; ``etran_lda`` is the mean true-class posterior of the
reference's LDA classifier, which reduces to identity-covariance Gaussian classes. ETran
itself min-max normalises both parts over the candidate models of a task and mixes them, so
it is a function over arrays, :func:`etran_combine`, not an estimator. The computation,
parity with the reference and measured figures: docs/estimators.md.

References
----------
.. [1] Gholami et al., "ETran: Energy-Based Transferability Estimation", ICCV 2023.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.special

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, check_choice, real_or_nan, register
from fennec_mlflow.errors import InvalidInputError

__all__ = ["ETranEnergy", "ETranLDA", "energy_per_sample", "etran_combine", "etran_energy_score", "etran_lda_score"]

Tail = Literal["bottom", "top"]

DEFAULT_PERCENT = 0.5
DEFAULT_ENERGY_WEIGHT = 0.15


def energy_per_sample(features: np.ndarray) -> np.ndarray:
    """``logsumexp`` of each row: the energy (negated free energy) of each sample's features."""
    top = features.max(axis=1)
    return np.log(np.exp(features - top[:, None]).sum(axis=1)) + top


def _selected_count(n_samples: int, percent: float, tail: Tail) -> int:
    # The reference's rounding (floor for the bottom tail, ceiling for the top), at least one sample.
    scaled = int(percent * 10) * n_samples
    count = scaled // 1000 if tail == "bottom" else -(-scaled // 1000)
    return min(max(count, 1), n_samples)


def _energy_from_checked(features: np.ndarray, percent: float, tail: Tail) -> float:
    energies = energy_per_sample(features)
    count = _selected_count(energies.size, percent, tail)
    if tail == "bottom":
        selected = np.partition(energies, count - 1)[:count]
    else:
        selected = np.partition(energies, energies.size - count)[energies.size - count:]
    return float(selected.mean())


def lda_posteriors(features: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Posteriors ``(N, C)`` of identity-covariance Gaussian class models (the reference's LDA)."""
    n_classes = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=n_classes)
    membership = np.zeros((n_classes, codes.size))
    membership[codes, np.arange(codes.size)] = 1.0
    # Centring shifts every logit equally; it avoids cancellation on a large common offset (ReLU).
    centred = features - features.mean(axis=0)
    means = membership @ centred / counts[:, None]
    logits = centred @ means.T - 0.5 * np.einsum("cd,cd->c", means, means) + np.log(counts / codes.size)
    return scipy.special.softmax(logits, axis=1)


def _lda_from_checked(features: np.ndarray, codes: np.ndarray) -> float:
    posteriors = lda_posteriors(features, codes)
    return float(posteriors[np.arange(codes.size), codes].mean())


def _min_max(values: np.ndarray) -> np.ndarray:
    spread = values.max() - values.min()
    if spread == 0.0:
        return np.zeros_like(values)
    return (values - values.min()) / spread


def etran_combine(energy_scores: Any, lda_scores: Any, *, energy_weight: float = DEFAULT_ENERGY_WEIGHT) -> np.ndarray:
    """ETran scores of the candidate models of ONE task, from their two parts (reference ``tw.py``).

    ``energy_scores`` and ``lda_scores``: one value per model, same order. Each part is min-max
    normalised over the models, then ``energy_weight * energy + (1 - energy_weight) * lda``.
    """
    energy = np.asarray(energy_scores, dtype=np.float64)
    lda = np.asarray(lda_scores, dtype=np.float64)
    if energy.ndim != 1 or energy.shape != lda.shape or energy.size == 0:
        raise InvalidInputError(
            f"energy_scores and lda_scores must be non-empty 1-D arrays of one value per model; "
            f"got shapes {energy.shape} and {lda.shape}"
        )
    if not (np.isfinite(energy).all() and np.isfinite(lda).all()):
        raise InvalidInputError("energy_scores and lda_scores must be finite")
    if not 0.0 <= real_or_nan(energy_weight) <= 1.0:
        raise InvalidInputError(f"energy_weight must be in [0, 1]; got {energy_weight!r}")
    return energy_weight * _min_max(energy) + (1.0 - energy_weight) * _min_max(lda)


def etran_energy_score(features: np.ndarray, *, percent: float = DEFAULT_PERCENT, tail: Tail = "bottom") -> float:
    """ETran's energy score (no labels): mean energy of the ``percent`` % lowest-energy samples."""
    return ETranEnergy(percent=percent, tail=tail).score(features)


def etran_lda_score(features: np.ndarray, labels: np.ndarray) -> float:
    """ETran's LDA classification score: mean true-class posterior, identity-covariance Gaussians."""
    return ETranLDA().score(features, labels)


@register
class ETranEnergy(TransferabilityEstimator):
    """ETran's energy score: mean energy of the lowest- (or highest-) energy samples; no labels.

    Parameters
    ----------
    percent : float in (0, 100], default 0.5
        Share of the samples averaged, in percent (the reference's 0.5); at least one sample.
    tail : {"bottom", "top"}, default "bottom"
        Average the lowest energies (the reference's) or the highest.
    """

    name = "etran_energy"
    requires_labels = False
    requires_source_logits = False

    def __init__(self, percent: float = DEFAULT_PERCENT, tail: Tail = "bottom"):
        self.percent = percent
        self.tail = tail

    def _validate_params(self) -> None:
        if not 0.0 < real_or_nan(self.percent) <= 100.0:
            raise InvalidInputError(f"percent must be in (0, 100]; got {self.percent!r}")
        check_choice("tail", self.tail, ("bottom", "top"))

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _energy_from_checked(features, self.percent, self.tail)


@register
class ETranLDA(TransferabilityEstimator):
    """ETran's LDA classification score: mean posterior of the true class, in [0, 1].

    No hyper-parameters: the reference's shrinkage and eigenproblem cancel out of it.
    """

    name = "etran_lda"
    requires_labels = True
    requires_source_logits = False

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _lda_from_checked(features, labels)
