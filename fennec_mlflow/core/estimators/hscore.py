"""H-Score and its shrinkage-regularised form: between-class variance of the whitened features.

``H = tr(cov(f)^+ cov(E[f | y]))``, the sum of the Fisher ratios of the whitened feature
directions, in ``[0, C - 1]``. The shrinkage form replaces ``cov(f)`` by its Ledoit-Wolf
estimate, whose inverse stays meaningful when D is not far below N (where ``H`` saturates at
``C - 1`` for any labelling). Both are computed from one eigendecomposition of the smaller
Gram matrix. The computation, parity with the references and measured figures:
docs/estimators.md.

References
----------
.. [1] Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer
   Learning", ICIP 2019.
.. [2] Ibrahim, Ponomareva & Mazumder, "Newer is not always better: Rethinking transferability
   metrics, their peculiarities, stability and performance", 2021.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, real_or_nan, register
from fennec_mlflow.errors import InvalidInputError

__all__ = ["HScore", "ShrinkageHScore", "h_score", "shrinkage_h_score", "ledoit_wolf_shrinkage"]

# numpy.linalg.pinv's cut-off in the reference: singular values below rcond * largest are zero.
REFERENCE_RCOND = 1e-15


class _BetweenClassSpectrum:
    """Eigenvalues of the centred scatter ``X^T X`` and the between-class energy along each.

    ``eigenvalues`` holds min(N, D) values (the rest of the D are zero); ``energies`` the
    matching ``e_j``; ``row_norms4 = sum_n |x_n|^4`` for Ledoit-Wolf.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        n_samples, n_features = features.shape
        centred = features - features.mean(axis=0)
        n_classes = int(labels.max()) + 1
        counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
        membership = np.zeros((n_classes, n_samples))
        membership[labels, np.arange(n_samples)] = 1.0
        if n_samples > n_features:
            eigenvalues, directions = scipy.linalg.eigh(centred.T @ centred, check_finite=False)
            class_sums = membership @ centred  # X^T 1_c, as rows (C, D)
            energies = ((class_sums @ directions) ** 2 / counts[:, None]).sum(axis=0)
        else:
            eigenvalues, left = scipy.linalg.eigh(centred @ centred.T, check_finite=False)
            along = left.T @ membership.T  # u_j . 1_c, (N, C)
            total = left.sum(axis=0)  # u_j . 1
            energies = eigenvalues * ((along**2 / counts).sum(axis=1) - total**2 / n_samples)
        self.eigenvalues = np.clip(eigenvalues, 0.0, None)
        self.energies = np.clip(energies, 0.0, None)
        self.n_samples = n_samples
        self.n_features = n_features
        self.total_variance = float(np.einsum("nd,nd->", centred, centred))  # tr(X^T X)
        self.row_norms4 = float(np.sum(np.einsum("nd,nd->n", centred, centred) ** 2))


def _hscore(spectrum: _BetweenClassSpectrum, rcond: float) -> float:
    eigenvalues = spectrum.eigenvalues
    if eigenvalues.size == 0 or eigenvalues[-1] <= 0.0:
        return 0.0  # constant features: the covariance (and its pseudo-inverse) is zero
    kept = eigenvalues > rcond * eigenvalues.max()
    return float(np.sum(spectrum.energies[kept] / eigenvalues[kept]))


def _ledoit_wolf(spectrum: _BetweenClassSpectrum) -> tuple[float, float]:
    """Ledoit-Wolf shrinkage ``a`` and target scale ``mu`` (scikit-learn's formula)."""
    n_samples, n_features = spectrum.n_samples, spectrum.n_features
    covariance_eigenvalues = spectrum.eigenvalues / n_samples  # of S = X^T X / N
    mu = spectrum.total_variance / n_samples / n_features
    frobenius2 = float(np.sum(covariance_eigenvalues**2))  # ||S||_F^2
    n_missing = n_features - covariance_eigenvalues.size  # zero eigenvalues not computed
    delta = (float(np.sum((covariance_eigenvalues - mu) ** 2)) + n_missing * mu**2) / n_features
    beta = (spectrum.row_norms4 / n_samples - frobenius2) / (n_features * n_samples)
    beta = min(beta, delta)
    if n_features == 1 or beta <= 0.0:
        return 0.0, mu
    return beta / delta, mu


def _shrinkage_hscore(spectrum: _BetweenClassSpectrum, rcond: float) -> float:
    shrinkage, mu = _ledoit_wolf(spectrum)
    n_samples = spectrum.n_samples
    denominators = (1.0 - shrinkage) * spectrum.eigenvalues / n_samples + shrinkage * mu
    if denominators.size == 0 or denominators.max() <= 0.0:
        return 0.0  # constant features
    kept = denominators > rcond * denominators.max()
    return float((1.0 - shrinkage) / (n_samples - 1) * np.sum(spectrum.energies[kept] / denominators[kept]))


def ledoit_wolf_shrinkage(features: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage of the feature covariance (as ``sklearn.covariance.LedoitWolf``)."""
    features = np.asarray(features, dtype=np.float64)
    return _ledoit_wolf(_BetweenClassSpectrum(features, np.zeros(features.shape[0], dtype=np.int64)))[0]


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} is not finite ({value})")
    return value


@register
class HScore(TransferabilityEstimator):
    """H-Score: between-class variance of the whitened features, in ``[0, C - 1]``.

    Parameters
    ----------
    rcond : float in [0, 1), default 1e-15
        Cut-off of the pseudo-inverse, relative to the largest eigenvalue (the reference's).
    """

    name = "hscore"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, rcond: float = REFERENCE_RCOND):
        self.rcond = rcond

    def _validate_params(self) -> None:
        if not (0.0 <= real_or_nan(self.rcond) < 1.0):
            raise InvalidInputError(f"rcond must be in [0, 1); got {self.rcond!r}")

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _finite(_hscore(_BetweenClassSpectrum(features, labels), self.rcond), "H-score")


@register
class ShrinkageHScore(HScore):
    """H-Score with the feature covariance replaced by its Ledoit-Wolf shrinkage estimate.

    Parameters
    ----------
    rcond : float in [0, 1), default 1e-15
        As for :class:`HScore`.
    """

    name = "hscore_shrinkage"

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _finite(_shrinkage_hscore(_BetweenClassSpectrum(features, labels), self.rcond), "shrinkage H-score")


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-Score of ``features`` (N, D) for ``labels`` (N,); see :class:`HScore`."""
    return HScore().score(features, labels)


def shrinkage_h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """Shrinkage-regularised H-Score; see :class:`ShrinkageHScore`."""
    return ShrinkageHScore().score(features, labels)
