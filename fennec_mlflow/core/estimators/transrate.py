"""TransRate: how much the labels reduce the coding rate of the features.

With ``Z`` the centred features, ``R(Z) = 1/2 logdet(I + Z^T Z / (m eps))`` is the coding rate
of its ``m`` rows at distortion ``eps``; TransRate is ``R(Z)`` minus the mean of ``R(Z_c)``
over the classes ``c``: high when the classes are compact and apart. Every log-determinant
is taken on the smaller Gram matrix. The computation, parity with the reference and measured
figures: docs/estimators.md.

References
----------
.. [1] Huang et al., "Frustratingly Easy Transferability Estimation", ICML 2022.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, real_or_nan, register
from fennec_mlflow.errors import InvalidInputError

__all__ = ["TransRate", "transrate_score", "coding_rate"]

DEFAULT_EPS = 1e-4


def _half_logdet_identity_plus(gram: np.ndarray, scale: float) -> float:
    """``1/2 logdet(I + gram / scale)`` for a symmetric positive semi-definite ``gram``."""
    matrix = gram / scale
    matrix.flat[:: matrix.shape[0] + 1] += 1.0
    lower = scipy.linalg.cholesky(matrix, lower=True, check_finite=False)
    return float(np.sum(np.log(np.diagonal(lower))))


def _rate(rows: np.ndarray, eps: float, gram_block: np.ndarray | None = None) -> float:
    n_rows, n_features = rows.shape
    if gram_block is not None:
        gram = gram_block
    elif n_rows <= n_features:
        gram = rows @ rows.T
    else:
        gram = rows.T @ rows
    return _half_logdet_identity_plus(gram, n_rows * eps)


def coding_rate(features: np.ndarray, eps: float = DEFAULT_EPS) -> float:
    """``1/2 logdet(I + Z^T Z / (m eps))`` of the rows of ``features`` (not centred here)."""
    return _rate(np.asarray(features, dtype=np.float64), eps)


def _transrate_from_checked(features: np.ndarray, labels: np.ndarray, eps: float) -> float:
    n_samples, n_features = features.shape
    centred = features - features.mean(axis=0)
    gram = centred @ centred.T if n_features >= n_samples else None
    total = _rate(centred, eps, gram)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    class_rates = 0.0
    for members in np.split(order, bounds):
        block = gram[np.ix_(members, members)] if gram is not None else None
        class_rates += _rate(centred[members], eps, block)
    score = total - class_rates / (len(bounds) + 1)
    if not math.isfinite(score):
        raise InvalidInputError(f"TransRate is not finite ({score})")
    return score


@register
class TransRate(TransferabilityEstimator):
    """TransRate: coding rate of all features minus the mean coding rate of each class.

    Parameters
    ----------
    eps : float, default 1e-4
        The distortion, positive.
    """

    name = "transrate"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, eps: float = DEFAULT_EPS):
        self.eps = eps

    def _validate_params(self) -> None:
        if not real_or_nan(self.eps) > 0.0:
            raise InvalidInputError(f"eps (the distortion) must be positive; got {self.eps!r}")

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _transrate_from_checked(features, labels, float(self.eps))


def transrate_score(features: np.ndarray, labels: np.ndarray, *, eps: float = DEFAULT_EPS) -> float:
    """TransRate of ``features`` (N, D) for ``labels`` (N,); see :class:`TransRate`."""
    return TransRate(eps=eps).score(features, labels)
