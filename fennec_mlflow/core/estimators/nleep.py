"""N-LEEP: LEEP with a Gaussian mixture fitted on the PCA-reduced features as the source head.

The features are reduced to the fewest principal components explaining ``variance_kept`` of
their variance, a Gaussian mixture with ``component_ratio`` components per class is fitted by
EM (scikit-learn), and its posteriors take the place of the source classifier's softmax in
LEEP. The computation, parity with the references and measured figures: docs/estimators.md.

References
----------
.. [1] Li et al., "Ranking Neural Checkpoints", CVPR 2021.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import scipy.linalg
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, check_choice, is_integer, real_or_nan, register
from fennec_mlflow.errors import InvalidInputError

__all__ = ["NLEEP", "nleep_score", "principal_scores"]

Reduction = Literal["mean_log", "mean"]


def principal_scores(features: np.ndarray, variance_kept: float) -> np.ndarray:
    """Centred features on their top principal axes, the fewest explaining > ``variance_kept``."""
    n_samples, n_features = features.shape
    centred = features - features.mean(axis=0)
    total = float(np.einsum("nd,nd->", centred, centred))
    if not total > 0.0:
        raise InvalidInputError("features are constant (zero variance); N-LEEP's PCA and mixture are undefined")
    if n_samples > n_features:
        eigenvalues, axes = scipy.linalg.eigh(centred.T @ centred, check_finite=False)
    else:
        eigenvalues, left = scipy.linalg.eigh(centred @ centred.T, check_finite=False)
    eigenvalues = np.clip(eigenvalues[::-1], 0.0, None)
    ratio = np.cumsum(eigenvalues) / total
    n_kept = min(int(np.searchsorted(ratio, variance_kept, side="right")) + 1, eigenvalues.size)
    if n_samples > n_features:
        axes = axes[:, ::-1][:, :n_kept]
    else:
        left = left[:, ::-1][:, :n_kept]
        axes = centred.T @ left  # principal axes times singular values
    # scikit-learn's svd_flip convention: the largest |entry| of each axis is positive.
    signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(n_kept)])
    signs[signs == 0] = 1.0
    if n_samples > n_features:
        return centred @ (axes * signs)
    return left * (np.sqrt(eigenvalues[:n_kept]) * signs)


def _leep(posteriors: np.ndarray, labels: np.ndarray, reduction: Reduction) -> float:
    n_samples = labels.size
    n_classes = int(labels.max()) + 1
    membership = np.zeros((n_classes, n_samples))
    membership[labels, np.arange(n_samples)] = 1.0
    joint = membership @ posteriors / n_samples
    marginal = joint.sum(axis=0)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = np.einsum("nk,nk->n", posteriors, conditional[labels])
    if reduction == "mean":
        return float(expected.mean())
    with np.errstate(divide="ignore"):
        return float(np.mean(np.log(expected)))


def n_mixture_components(n_samples: int, n_classes: int, component_ratio: int) -> int:
    """``min(component_ratio * C, N // 2)``: at least two samples per mixture component on average."""
    return max(1, min(component_ratio * n_classes, n_samples // 2))


def _nleep_from_checked(features: np.ndarray, labels: np.ndarray, *, component_ratio: int,
                        variance_kept: float, random_state: int, reduction: Reduction) -> float:
    scores = principal_scores(features, variance_kept)
    n_components = n_mixture_components(labels.size, int(labels.max()) + 1, component_ratio)
    mixture = GaussianMixture(n_components=n_components, random_state=random_state)
    with warnings.catch_warnings():
        # k-means may find fewer distinct clusters than asked on tiny probes; EM copes.
        warnings.filterwarnings("ignore", message="Number of distinct clusters", category=ConvergenceWarning)
        posteriors = mixture.fit(scores).predict_proba(scores)
    value = _leep(posteriors, labels, reduction)
    if not math.isfinite(value):
        raise InvalidInputError(f"N-LEEP is not finite ({value}); the mixture gave no mass to a sample's class")
    return value


@register
class NLEEP(TransferabilityEstimator):
    """N-LEEP: LEEP of a Gaussian mixture fitted on the PCA-reduced features.

    Parameters
    ----------
    component_ratio : int, default 5
        Mixture components per target class, capped at ``N // 2`` components.
    variance_kept : float in (0, 1), default 0.8
        Share of the variance the kept principal components explain.
    random_state : int, default 0
        Seed of the mixture's initialisation.
    reduction : {"mean_log", "mean"}, default "mean_log"
        ``1/N sum log p(y_i | x_i)`` (the paper's LEEP) or ``1/N sum p(y_i | x_i)`` (what the
        SFDA code base reports).
    """

    name = "nleep"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, component_ratio: int = 5, variance_kept: float = 0.8, random_state: int = 0,
                 reduction: Reduction = "mean_log"):
        self.component_ratio = component_ratio
        self.variance_kept = variance_kept
        self.random_state = random_state
        self.reduction = reduction

    def _validate_params(self) -> None:
        if not is_integer(self.component_ratio, least=1):
            raise InvalidInputError(f"component_ratio must be a positive integer; got {self.component_ratio!r}")
        if not (0.0 < real_or_nan(self.variance_kept) < 1.0):
            raise InvalidInputError(f"variance_kept must be in (0, 1); got {self.variance_kept!r}")
        check_choice("reduction", self.reduction, ("mean_log", "mean"))

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _nleep_from_checked(
            features, labels, component_ratio=int(self.component_ratio), variance_kept=float(self.variance_kept),
            random_state=self.random_state, reduction=self.reduction,
        )


def nleep_score(features: np.ndarray, labels: np.ndarray, **params: Any) -> float:
    """N-LEEP of ``features`` (N, D) for ``labels`` (N,); ``params`` as :class:`NLEEP`."""
    return NLEEP(**params).score(features, labels)
