"""LogME: the maximised log evidence of a Bayesian linear model of the labels on the features.

For each class, a Bayesian linear regression of the class's one-hot column on the features,
with prior precision ``alpha`` and noise precision ``beta`` chosen by the JMLR paper's
fixed-point iteration; the score is that regression's log marginal likelihood per sample,
averaged over the classes. The computation, parity with the reference (and the reference bug
we correct) and measured figures: docs/estimators.md.

References
----------
.. [1] You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
   ICML 2021.
.. [2] You et al., "Ranking and Tuning Pre-trained Models: A New Paradigm for Exploiting Model
   Hubs", JMLR 2022.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, register
from fennec_mlflow.errors import InvalidInputError

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
        raise InvalidInputError("features are all zero; LogME is undefined (its evidence diverges to -inf)")
    n_samples, n_features = features.shape
    n_classes = int(labels.max()) + 1
    one_hot = np.zeros((n_samples, n_classes))
    one_hot[np.arange(n_samples), labels] = 1.0
    sigma, projections = _gram_spectrum(features, one_hot)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)  # |y_c|^2
    evidence = _mean_evidence(sigma, projections, counts, n_samples, n_features)
    score = float(evidence.mean())
    if not math.isfinite(score):
        raise InvalidInputError(f"LogME evidence is not finite ({score}); features may be degenerate")
    return score


@register
class LogME(TransferabilityEstimator):
    """LogME: the maximised log evidence per sample, averaged over the classes.

    No hyper-parameters: the fixed point's constants are the reference's.
    """

    name = "logme"
    requires_labels = True
    requires_source_logits = False

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _logme_from_checked(features, labels)


def logme_score(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME score of ``features`` (N, D) for integer ``labels`` (N,); see :class:`LogME`."""
    return LogME().score(features, labels)
