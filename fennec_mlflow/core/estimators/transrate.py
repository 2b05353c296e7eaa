"""TransRate (Huang et al., ICML 2022): coding-rate reduction of the features by the labels.

What is computed
----------------
With ``Z`` the features centred by their overall mean (N x D), the coding rate of ``m``
vectors at distortion ``eps`` is ``R(Z) = 1/2 logdet(I_D + Z^T Z / (m eps))``, and::

    TransRate = R(Z) - 1/C sum_c R(Z_c)

where ``Z_c`` holds the (globally centred, not re-centred) rows of class ``c`` and ``m`` is
the number of rows of the matrix being coded (N, then ``n_c``). High when the classes are
compact and spread apart; higher is better. ``eps = 1e-4`` by default.

How: ``det(I_D + Z^T Z / a) = det(I_m + Z Z^T / a)`` (Sylvester), so every log-determinant
is taken on the smaller Gram matrix, by Cholesky (``I + Gram / a`` is symmetric positive
definite with eigenvalues >= 1, so the factorisation is always stable), and the class blocks
are cut out of one N x N Gram matrix when D >= N. The reference takes C + 1 LU
log-determinants of D x D matrices: at N=500, D=2048, C=100 that is 20 s against our
34 ms (docs/benchmarks_estimators_a.md).

Parity with the reference (thuml/Transfer-Learning-Library ``tllib/ranking/transrate.py``,
``transrate``, the code published with the paper)
-------------------------------------------------------------------------------------
Same definition, same ``eps``, the unweighted mean over classes of the class rates, and
``m eps`` (not ``m eps^2 / D``) in the scale, all as that code. Measured agreement on the
golden probes: 7e-14 relative (the test asserts 1e-9).

No deliberate differences. Behaviour (the reference's too): constant features give
``Z = 0`` and TransRate 0; one sample in a class codes that one vector
(``1/2 log(1 + |z|^2 / eps)``), a finite number; D >> N and float32 input give finite
numbers. Note that the value grows with D and with the feature scale (it is a log-volume);
compare models on one probe.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, register

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
        raise ValueError(f"TransRate is not finite ({score})")
    return score


def _check_eps(eps: float) -> None:
    if not (float(eps) > 0.0):
        raise ValueError(f"eps (the distortion) must be positive; got {eps!r}")


@register
class TransRate(TransferabilityEstimator):
    """TransRate: coding rate of all features minus the mean coding rate of each class."""

    name = "transrate"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, eps: float = DEFAULT_EPS):
        _check_eps(eps)
        self.eps = eps

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _transrate_from_checked(features, labels, float(self.eps))


def transrate_score(features: np.ndarray, labels: np.ndarray, *, eps: float = DEFAULT_EPS) -> float:
    """TransRate of ``features`` (N, D) for ``labels`` (N,); see :class:`TransRate`."""
    return TransRate(eps=eps).score(features, labels)
