"""H-Score (Bao et al., ICIP 2019) and its shrinkage-regularised form (Ibrahim et al., NeurIPS 2021).

What is computed
----------------
``hscore``: with ``cov(f)`` the feature covariance and ``cov(E[f | y])`` the covariance of the
features replaced by their class means (both with the ``1/(N-1)`` normalisation of
``numpy.cov``)::

    H = tr( cov(f)^+ cov(E[f | y]) )

the between-class variance in the whitened feature space: the sum of the "Fisher ratios"
of the whitened directions. Higher is better; ``0 <= H <= C - 1``.

``hscore_shrinkage`` ("Newer is not always better", Ibrahim, Ponomareva & Mazumder, 2021):
the inverse of the noisy sample covariance is the problem when D is not far below N, so
replace it by the Ledoit-Wolf estimate ``cov_a = (1 - a) S + a mu I`` (``S`` the covariance
with ``1/N``, ``mu = tr(S) / D``, ``a`` the Ledoit-Wolf shrinkage, in [0, 1])::

    H_a = tr( cov_a^-1 (1 - a) cov(E[f | y]) )

How: both are sums over the eigen-directions ``v_j`` of the centred scatter ``X^T X``
(eigenvalues ``lambda_j``) of the between-class energy along them,
``e_j = sum_c (v_j . X^T 1_c)^2 / n_c``::

    H   = sum_{j: lambda_j > rcond lambda_max} e_j / lambda_j
    H_a = (1 - a) / (N - 1) sum_j e_j / ((1 - a) lambda_j / N + a mu)

We take the eigendecomposition of the smaller Gram matrix (D x D if N > D, else the N x N
``X X^T``, where ``e_j = lambda_j (sum_c (u_j . 1_c)^2 / n_c - (u_j . 1)^2 / N)``: the second
term cancels the null direction ``1`` that centring creates). The Ledoit-Wolf ``a`` is
computed from the same eigenvalues (``||S||_F^2 = sum_j (lambda_j / N)^2`` and
``sum_n |x_n|^4``), never from a D x D product. The references invert a D x D matrix with an
SVD (``pinv``) and multiply two D x D matrices; at N=500, D=2048 that is seconds against our
milliseconds (docs/benchmarks_estimators_a.md).

Parity with the references (thuml/Transfer-Learning-Library ``tllib/ranking/hscore.py``:
``h_score`` and ``regularized_h_score``, the latter using scikit-learn's ``LedoitWolf``)
---------------------------------------------------------------------------------------
``rcond=1e-15`` is the reference's ``pinv`` cut-off, relative to the largest eigenvalue.
Measured agreement on the golden probes: 1e-15 relative for both (N > D and D > N alike;
2.3e-12 absolute on the benchmark probes); the tests assert 1e-9 relative.

Deliberate differences:

- Ledoit-Wolf's ``delta = ||S - mu I||_F^2 / D`` is computed as a sum of squares of
  ``lambda_j / N - mu`` rather than scikit-learn's ``||S||^2 - 2 mu tr(S) + D mu^2``, which
  cancels catastrophically when ``S`` is nearly isotropic. Same value to 1e-12 otherwise.
- The shrinkage variant keeps the reference's mix of normalisations (``1/N`` in ``cov_a``,
  ``1/(N-1)`` in the between-class covariance), so its numbers equal the reference's.

Behaviour to know about (the reference's too, by construction):

- Saturation: when D >= N - 1 the centred features span all of ``1^perp`` and ``H = C - 1``
  for ANY labelling, shuffled labels included; near that (D a sizeable fraction of N) it is
  close to ``C - 1``. That is the case the shrinkage variant was designed for: use
  ``hscore_shrinkage`` on probes with D not far below N (N=500 probes of 2048-D features).
- Constant features: zero covariance, ``H = H_a = 0`` (no information), not an error.
- One or two samples per class, 100-sample probes, float32 input: finite numbers (tests).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, register

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


def _check_rcond(rcond: float) -> None:
    if not (0.0 <= float(rcond) < 1.0):
        raise ValueError(f"rcond must be in [0, 1); got {rcond!r}")


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} is not finite ({value})")
    return value


@register
class HScore(TransferabilityEstimator):
    """H-Score: between-class variance of the whitened features (pseudo-inverse, cut-off ``rcond``)."""

    name = "hscore"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, rcond: float = REFERENCE_RCOND):
        _check_rcond(rcond)
        self.rcond = rcond

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _finite(_hscore(_BetweenClassSpectrum(features, labels), self.rcond), "H-score")


@register
class ShrinkageHScore(HScore):
    """H-Score with the Ledoit-Wolf shrunk covariance (tllib's ``regularized_h_score``)."""

    name = "hscore_shrinkage"

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _finite(_shrinkage_hscore(_BetweenClassSpectrum(features, labels), self.rcond), "shrinkage H-score")


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-Score of ``features`` (N, D) for ``labels`` (N,); see :class:`HScore`."""
    return HScore().score(features, labels)


def shrinkage_h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """Shrinkage-regularised H-Score; see :class:`ShrinkageHScore`."""
    return ShrinkageHScore().score(features, labels)
