"""LogME (You et al., ICML 2021; JMLR 2022): log maximum evidence of a Bayesian linear model.

What is computed
----------------
For each target class ``c``, a Bayesian linear regression (no intercept) of the class's
one-hot column ``y_c`` (N,) on the features ``F`` (N x D), with prior ``w ~ N(0, I / alpha)``
and noise precision ``beta``. Its log marginal likelihood (evidence) at ``(alpha, beta)`` is::

    L = D/2 log(alpha) + N/2 log(beta) - 1/2 log|A| - beta/2 |y - F m|^2 - alpha/2 |m|^2 - N/2 log(2 pi)
    A = alpha I_D + beta F^T F,    m = beta A^{-1} F^T y

``(alpha, beta)`` are chosen by the JMLR paper's fixed-point iteration, written in the
eigenbasis of ``F^T F`` (eigenvalues ``sigma_j``, ``x = U^T y`` with ``U`` the left singular
vectors of ``F``): with ``t = alpha / beta``,
``gamma = sum_j sigma_j / (sigma_j + t)``, ``|m|^2 = sum_j sigma_j x_j^2 / (sigma_j + t)^2``,
``|y - F m|^2 = sum_j x_j^2 t^2 / (sigma_j + t)^2 + (|y|^2 - |x|^2)``, then
``alpha <- gamma / (|m|^2 + 1e-5)``, ``beta <- (N - gamma) / (|y - F m|^2 + 1e-5)``; at most
11 rounds, stopping once ``t`` moves by at most 1e-3 relative. The score is ``L / N``
averaged over the classes (higher is better; it is a log density, not a probability, so it
can be positive).

Our implementation runs the iteration for all classes at once (one ``(k, C)`` array; a
class that has converged is frozen, so every class takes exactly the steps the reference's
per-class loop takes), and gets the spectrum from one symmetric eigendecomposition of the
smaller Gram matrix: ``F^T F`` (D x D) when N > D, ``F F^T`` (N x N) otherwise.

Parity with the reference (thuml/LogME ``LogME.py``, ``LogME._fit_fixed_point``, the default
``LogME().fit``)
------------------------------------------------------------------------------------------
Same iteration, same constants (1e-5, 11 rounds, 1e-3), same stopping rule, so the same
``(alpha, beta)``. Measured agreement on the golden probes: 4e-15 relative when N > D,
6e-12 relative (3e-13 absolute) on the D > N probe (tests/test_estimators_a.py asserts 1e-9
relative).

Deliberate difference (a reference bug, thuml/LogME issue #23, fix proposed in PR #24 and
accepted by the maintainer but not merged at commit 56551ca): the reference sums
``log(alpha + beta sigma_j)`` over the ``k`` non-zero singular values only, whereas
``log|A|`` has ``D`` terms, ``D - k`` of them ``log(alpha)``. That is harmless when
``F`` has full column rank (N > D), but when D > N (or features are rank deficient: dead
ReLU units, duplicated columns) it adds ``(D - k) log(alpha) / (2 N)`` to each class's
score, a bias that grows with D and, with ``alpha > 1`` as usual, favours wide models (on our
D > N golden probe, N=60, D=256: 13.4 instead of -0.054; the ICML version gives -0.055). We
use all ``D`` terms, as the ICML version of the same reference (``_fit_icml``) does; our
goldens come from ``_fit_fixed_point`` with that one-line fix applied. When N > D and the
features have full rank we equal the unpatched reference (tested).

Other differences, all outside the reference's normal operating range:

- Singular values the reference keeps as "non-zero" (``s > 1e-10``, an absolute threshold)
  are kept here when ``sigma > max(N, D) * eps * sigma_max`` (relative, like
  ``numpy.linalg.matrix_rank``); below that the eigen-directions of a Gram matrix are
  roundoff. Either choice gives the same score to roundoff once ``log|A|`` has all D terms.
- All-zero features make ``alpha = 0`` (``log 0``; the reference returns NaN or -inf): we
  raise a ``ValueError``.

Robustness (tests/test_estimators_a.py): D >> N, 100-sample probes, one or two samples per
class and constant (non-zero) features all give finite numbers; constant features mean a
rank-one design (an intercept-only model). float32 input is scored in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, register

__all__ = ["LogME", "logme_score"]

# The reference's constants: evidence fixed point (JMLR 2022, Algorithm 2).
MAX_ROUNDS = 11
RELATIVE_TOLERANCE = 1e-3
DENOMINATOR_EPSILON = 1e-5


def _gram_spectrum(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``sigma`` (k,) of ``F^T F`` and ``U^T Y`` (k, C) for F's left singular vectors U."""
    n_samples, n_features = features.shape
    if n_samples > n_features:
        eigenvalues, right = scipy.linalg.eigh(features.T @ features, check_finite=False)
        keep = eigenvalues > max(n_samples, n_features) * np.finfo(float).eps * eigenvalues[-1]
        eigenvalues, right = eigenvalues[keep], right[:, keep]
        # U^T Y = S^-1 V^T F^T Y: no N x k matrix U is ever formed.
        projections = (right.T @ (features.T @ targets)) / np.sqrt(eigenvalues)[:, None]
        return eigenvalues, projections
    eigenvalues, left = scipy.linalg.eigh(features @ features.T, check_finite=False)
    return np.clip(eigenvalues, 0.0, None), left.T @ targets


def _mean_evidence(sigma: np.ndarray, projections: np.ndarray, target_norms: np.ndarray,
                   n_samples: int, n_features: int) -> np.ndarray:
    """Per-target maximised evidence / N, all targets iterated together."""
    squared = projections**2  # (k, C)
    outside = target_norms - squared.sum(axis=0)  # |y|^2 - |x|^2: energy outside F's range
    n_targets = squared.shape[1]
    alpha = np.ones(n_targets)
    beta = np.ones(n_targets)
    weight_norm = np.zeros(n_targets)
    residual = np.zeros(n_targets)
    active = np.arange(n_targets)
    sigma_column = sigma[:, None]
    for _ in range(MAX_ROUNDS):
        ratio = alpha[active] / beta[active]
        shifted = sigma_column + ratio
        gamma = (sigma_column / shifted).sum(axis=0)
        weight_norm[active] = (sigma_column * squared[:, active] / shifted**2).sum(axis=0)
        residual[active] = (squared[:, active] * (ratio / shifted) ** 2).sum(axis=0) + outside[active]
        alpha[active] = gamma / (weight_norm[active] + DENOMINATOR_EPSILON)
        beta[active] = (n_samples - gamma) / (residual[active] + DENOMINATOR_EPSILON)
        moved = np.abs(alpha[active] / beta[active] - ratio) / ratio
        active = active[moved > RELATIVE_TOLERANCE]
        if active.size == 0:
            break
    # log|A| over all D eigenvalues: the D - k zero ones contribute log(alpha) each.
    log_det = np.log(alpha + beta * sigma_column).sum(axis=0) + (n_features - sigma.size) * np.log(alpha)
    evidence = (
        n_features / 2.0 * np.log(alpha)
        + n_samples / 2.0 * np.log(beta)
        - 0.5 * log_det
        - beta / 2.0 * residual
        - alpha / 2.0 * weight_norm
        - n_samples / 2.0 * math.log(2.0 * math.pi)
    )
    return evidence / n_samples


def _logme_from_checked(features: np.ndarray, labels: np.ndarray) -> float:
    if not np.any(features):
        raise ValueError("features are all zero; LogME is undefined (its evidence diverges to -inf)")
    n_samples, n_features = features.shape
    n_classes = int(labels.max()) + 1
    one_hot = np.zeros((n_samples, n_classes))
    one_hot[np.arange(n_samples), labels] = 1.0
    sigma, projections = _gram_spectrum(features, one_hot)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)  # |y_c|^2
    evidence = _mean_evidence(sigma, projections, counts, n_samples, n_features)
    score = float(evidence.mean())
    if not math.isfinite(score):
        raise ValueError(f"LogME evidence is not finite ({score}); features may be degenerate")
    return score


@register
class LogME(TransferabilityEstimator):
    """LogME: mean over classes of the maximised log evidence per sample (higher is better)."""

    name = "logme"
    requires_labels = True
    requires_source_logits = False

    def __init__(self) -> None:
        pass

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _logme_from_checked(features, labels)


def logme_score(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME score of ``features`` (N, D) for integer ``labels`` (N,); see :class:`LogME`."""
    return LogME().score(features, labels)
