"""FDA score (Fennec, eq. 2-3) and SFDA score: class posteriors in a shrunk Fisher projection.

FDA fits Fisher's discriminant projection of the features, with SFDA's adaptive shrinkage of
the within-class scatter, models each class as a unit-covariance Gaussian in the projected
space, and averages (or sums) the posterior of every sample's true class. SFDA then mixes each
sample towards the other classes by its confidence (ConfMix) and scores the mixture again.
The computation, parity with the reference and measured figures: docs/estimators.md.

References
----------
.. [1] Bai et al., "Pre-trained Model Recommendation for Downstream Fine-tuning", 2024
   (Fennec).
.. [2] Shao et al., "Not All Models Are Equal: Predicting Model Transferability in a
   Self-challenging Fisher Space", ECCV 2022.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.special

from fennec_mlflow.core.estimators.base import (
    TransferabilityEstimator,
    check_choice,
    check_features,
    check_labels,
    is_integer,
    real_or_nan,
    register,
)
from fennec_mlflow.errors import InvalidInputError

__all__ = [
    "FisherProjection",
    "fda_projection",
    "fda_probabilities",
    "fda_score",
    "sfda_score",
    "sfda_shrinkage",
    "FDA",
    "SFDA",
]

# SFDA's adaptive shrinkage: s = max(exp(-DECAY * lambda_max(S_W)), FLOOR).
SHRINKAGE_DECAY = 5.0
SHRINKAGE_FLOOR = 1e-10
# SFDA's count of power-iteration products: the same count gives the reference's shrinkage exactly.
POWER_ITERATION_PRODUCTS = 7
# Below this relative size of S_W 1 the all-ones start vector is treated as blind.
BLIND_START_TOLERANCE = 1e-8

Reduction = Literal["mean", "sum"]


@dataclass(frozen=True, eq=False)
class FisherProjection:
    """A fitted FDA projection and the Gaussian class model that lives in it.

    ``directions`` (D, k): columns ``u_j`` with ``U^T S_W' U = I``, by decreasing ``ratios``
    (the generalised eigenvalues: between- over within-class variance along ``u_j``).
    ``class_means`` (C, D) and ``priors`` (C,) follow the sorted order of the label ids.
    """

    directions: np.ndarray
    ratios: np.ndarray
    shrinkage: float
    class_means: np.ndarray
    priors: np.ndarray

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Project features, ``x -> U^T x`` (not centred, like the reference's ``transform``)."""
        return np.asarray(features, dtype=np.float64) @ self.directions

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Posteriors ``p(c | x)`` (N, C) under unit-covariance Gaussians in the projected space."""
        # Centring shifts every logit equally; it avoids cancellation on a large common offset (ReLU).
        centre = self.priors @ self.class_means
        projected = (np.asarray(features, dtype=np.float64) - centre) @ self.directions
        projected_means = (self.class_means - centre) @ self.directions
        logits = (
            projected @ projected_means.T
            - 0.5 * np.einsum("ck,ck->c", projected_means, projected_means)
            + np.log(self.priors)
        )
        return scipy.special.softmax(logits, axis=1)


# ------------------------------------------------------------------------ building blocks


def _class_means_and_priors(features: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_classes = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=n_classes)
    # Class sums as one (C x N) @ (N x D) product: BLAS, unlike an unbuffered np.add.at.
    membership = np.zeros((n_classes, codes.size))
    membership[codes, np.arange(codes.size)] = 1.0
    return membership @ features / counts[:, None], counts / codes.size


def _within_class_scatter(features: np.ndarray, codes: np.ndarray, class_means: np.ndarray) -> np.ndarray:
    residuals = features - class_means[codes]
    return residuals.T @ residuals / features.shape[0]


def _largest_eigenvalue_estimate(symmetric: np.ndarray) -> float:
    """``||A^7 1|| / ||A^6 1||``: SFDA's power-iteration estimate of ``lambda_max(A)``."""
    n = symmetric.shape[0]
    image = symmetric @ np.ones(n)
    # A start vector orthogonal to A's range (rows summing to one) would only amplify roundoff.
    if np.linalg.norm(image) <= BLIND_START_TOLERANCE * np.trace(symmetric) * np.sqrt(n):
        return float(scipy.linalg.eigh(symmetric, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0])
    for _ in range(POWER_ITERATION_PRODUCTS - 2):
        image = symmetric @ (image / np.linalg.norm(image))
    return float(np.linalg.norm(symmetric @ (image / np.linalg.norm(image))))


def sfda_shrinkage(within_scatter: np.ndarray) -> float:
    """SFDA's adaptive shrinkage strength ``max(exp(-5 lambda_max(S_W)), 1e-10)``.

    Large within-class spread gets almost no regularisation; the floor keeps ``S_W'``
    invertible when ``S_W`` is singular (more dimensions than samples, dead units).
    """
    return max(float(np.exp(-SHRINKAGE_DECAY * _largest_eigenvalue_estimate(within_scatter))), SHRINKAGE_FLOOR)


def _shrink_towards_scaled_identity(scatter: np.ndarray, shrinkage: float) -> np.ndarray:
    n_features = scatter.shape[0]
    shrunk = (1.0 - shrinkage) * scatter
    shrunk.flat[:: n_features + 1] += shrinkage * np.trace(scatter) / n_features
    return shrunk


def _check_shrinkage(shrinkage: float | None) -> None:
    if shrinkage is not None and not (0.0 <= real_or_nan(shrinkage) <= 1.0):
        raise InvalidInputError(f"shrinkage must be None (SFDA's adaptive rule) or in [0, 1]; got {shrinkage!r}")


def _cholesky_of_regularised_scatter(within_scatter: np.ndarray, shrinkage: float) -> np.ndarray:
    regularised = _shrink_towards_scaled_identity(within_scatter, shrinkage)
    try:
        return scipy.linalg.cholesky(regularised, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise InvalidInputError(
            f"the regularised within-class scatter is singular (shrinkage={shrinkage:g}, "
            f"{within_scatter.shape[0]} features); use a larger shrinkage, or None for SFDA's adaptive rule"
        ) from None


def _orient(directions: np.ndarray) -> np.ndarray:
    # Eigenvectors have no sign: fix one so the projection is the same on every LAPACK build.
    rows = np.argmax(np.abs(directions), axis=0)
    signs = np.sign(directions[rows, np.arange(directions.shape[1])])
    signs[signs == 0] = 1.0
    return directions * signs


def _fit_fisher_projection(
    features: np.ndarray, codes: np.ndarray, shrinkage: float | None, n_components: int | None
) -> FisherProjection:
    """Fit on checked inputs: float64 features, labels coded ``0..C-1``."""
    class_means, priors = _class_means_and_priors(features, codes)
    n_classes, n_features = class_means.shape
    max_components = min(n_classes - 1, n_features)
    if n_components is None:
        n_components = max_components
    elif not (is_integer(n_components, least=1) and n_components <= max_components):
        raise InvalidInputError(
            f"n_components must be in [1, min(n_classes - 1, n_features)] = [1, {max_components}]; "
            f"got {n_components}"
        )
    within = _within_class_scatter(features, codes, class_means)
    if np.trace(within) <= 0.0:
        raise InvalidInputError(
            "features do not vary within any class (within-class scatter is zero); "
            "the FDA score is undefined for such features"
        )
    strength = sfda_shrinkage(within) if shrinkage is None else float(shrinkage)
    lower = _cholesky_of_regularised_scatter(within, strength)
    # S_B = B^T B (rows sqrt(pi_c) (mu_c - mu)): its whitened eigenvectors are B^T's left singular vectors.
    weighted_deviations = np.sqrt(priors)[:, None] * (class_means - priors @ class_means)
    whitened = scipy.linalg.solve_triangular(lower, weighted_deviations.T, lower=True, check_finite=False)
    left, singular_values, _ = np.linalg.svd(whitened, full_matrices=False)
    directions = scipy.linalg.solve_triangular(
        lower, left[:, :n_components], lower=True, trans="T", check_finite=False
    )
    return FisherProjection(
        directions=_orient(directions),
        ratios=singular_values[:n_components] ** 2,
        shrinkage=strength,
        class_means=class_means,
        priors=priors,
    )


def _true_class_probabilities(probabilities: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return probabilities[np.arange(codes.size), codes]


def _reduce(values: np.ndarray, reduction: str) -> float:
    return float(values.sum() if reduction == "sum" else values.mean())


def _sfda_from_checked(features: np.ndarray, codes: np.ndarray, shrinkage: float | None) -> float:
    first = _fit_fisher_projection(features, codes, shrinkage, None)
    # A second softmax, as SFDA does, keeps the mixing weights away from 0 and 1.
    confidence = _true_class_probabilities(scipy.special.softmax(first.predict_proba(features), axis=1), codes)
    n_classes = first.class_means.shape[0]
    # ConfMix: the less confident a sample, the further it moves towards the other classes.
    other_class_means = (first.class_means.sum(axis=0) - first.class_means) / (n_classes - 1)
    weight = confidence[:, None]
    mixed = weight * features + (1.0 - weight) * other_class_means[codes]
    second = _fit_fisher_projection(mixed, codes, first.shrinkage, None)
    return float(_true_class_probabilities(second.predict_proba(mixed), codes).mean())


# --------------------------------------------------------------------------- public API


def _check_inputs(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    checked = check_features(features)
    return checked, check_labels(labels, n_samples=checked.shape[0])


def fda_projection(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    shrinkage: float | None = None,
    n_components: int | None = None,
) -> FisherProjection:
    """Fit the FDA projection and its Gaussian class model.

    Parameters
    ----------
    features : array of shape (n_samples, n_features)
    labels : array of shape (n_samples,)
    shrinkage : float in [0, 1] or None, default None
        Fixed shrinkage strength of the within-class scatter; None for SFDA's adaptive rule.
    n_components : int, optional
        Directions kept, in ``[1, min(C - 1, D)]``; all of them by default.

    Returns
    -------
    FisherProjection
    """
    _check_shrinkage(shrinkage)
    return _fit_fisher_projection(*_check_inputs(features, labels), shrinkage, n_components)


def fda_probabilities(features: np.ndarray, labels: np.ndarray, *, shrinkage: float | None = None) -> np.ndarray:
    """In-sample class posteriors (N, C), columns in sorted order of the label ids (paper eq. 3)."""
    _check_shrinkage(shrinkage)
    checked, codes = _check_inputs(features, labels)
    return _fit_fisher_projection(checked, codes, shrinkage, None).predict_proba(checked)


def fda_score(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    shrinkage: float | None = None,
    reduction: Reduction = "mean",
    max_dim: int | str | None = None,
) -> float:
    """FDA score of ``features`` for ``labels``; parameters as :class:`FDA`, raw features by default."""
    return FDA(shrinkage=shrinkage, reduction=reduction, max_dim=max_dim).score(features, labels)


def sfda_score(features: np.ndarray, labels: np.ndarray, *, shrinkage: float | None = None,
               max_dim: int | str | None = None) -> float:
    """SFDA score of ``features`` for ``labels``; parameters as :class:`SFDA`, raw features by default."""
    return SFDA(shrinkage=shrinkage, max_dim=max_dim).score(features, labels)


def auto_max_dim(n_samples: int, n_classes: int) -> int:
    """Feature dimensions the in-sample FDA score can use without saturating: one per ten samples."""
    return max(n_classes, n_samples // 10)


def principal_components(features: np.ndarray, max_dim: int) -> np.ndarray:
    """``features`` projected on their top ``max_dim`` principal directions (unchanged if D <= max_dim)."""
    if features.shape[1] <= max_dim:
        return features
    centred = features - features.mean(axis=0)
    _, _, right = np.linalg.svd(centred, full_matrices=False)
    return centred @ right[:max_dim].T


def _capped(features: np.ndarray, labels: np.ndarray, max_dim: int | str | None) -> np.ndarray:
    if max_dim is None:
        return features
    limit = auto_max_dim(*features.shape[:1], int(labels.max()) + 1) if max_dim == "auto" else int(max_dim)
    return principal_components(features, limit)


def check_max_dim(max_dim: int | str | None) -> None:
    """Raise :class:`InvalidInputError` unless ``max_dim`` is None, ``"auto"`` or a positive integer."""
    if not (max_dim is None or max_dim == "auto" or is_integer(max_dim, least=1)):
        raise InvalidInputError(f"max_dim must be None, 'auto' or a positive integer; got {max_dim!r}")


@register
class FDA(TransferabilityEstimator):
    """Fennec's FDA score: mean (or summed) true-class posterior in the shrunk Fisher projection.

    Parameters
    ----------
    shrinkage : float in [0, 1] or None, default None
        Fixed shrinkage strength of the within-class scatter; None for SFDA's adaptive rule.
    reduction : {"mean", "sum"}, default "mean"
        Average over the samples (in [0, 1], what the performance matrix holds) or their sum
        (the paper's eq. 3).
    max_dim : int, "auto" or None, default "auto"
        Principal components kept before scoring; ``"auto"`` keeps ``max(C, N // 10)`` so that
        probes with N not far above D do not saturate at 1; None scores the raw features.
    """

    name = "fda"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, shrinkage: float | None = None, reduction: Reduction = "mean",
                 max_dim: int | str | None = "auto"):
        self.shrinkage = shrinkage
        self.reduction = reduction
        self.max_dim = max_dim

    def _validate_params(self) -> None:
        _check_shrinkage(self.shrinkage)
        check_choice("reduction", self.reduction, ("mean", "sum"))
        check_max_dim(self.max_dim)

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        features = _capped(features, labels, self.max_dim)
        projection = _fit_fisher_projection(features, labels, self.shrinkage, None)
        return _reduce(_true_class_probabilities(projection.predict_proba(features), labels), self.reduction)


@register
class SFDA(TransferabilityEstimator):
    """SFDA score: the FDA score after SFDA's ConfMix self-challenging stage, averaged.

    Parameters
    ----------
    shrinkage : float in [0, 1] or None, default None
        As for :class:`FDA`; the second stage reuses the first stage's strength.
    max_dim : int, "auto" or None, default "auto"
        As for :class:`FDA`; None is the reference's behaviour.
    """

    name = "sfda"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, shrinkage: float | None = None, max_dim: int | str | None = "auto"):
        self.shrinkage = shrinkage
        self.max_dim = max_dim

    def _validate_params(self) -> None:
        _check_shrinkage(self.shrinkage)
        check_max_dim(self.max_dim)

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _sfda_from_checked(_capped(features, labels, self.max_dim), labels, self.shrinkage)
