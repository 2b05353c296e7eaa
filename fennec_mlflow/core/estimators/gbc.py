"""GBC, the Gaussian Bhattacharyya Coefficient: minus the total overlap between class Gaussians.

After PCA to ``n_components`` dimensions, each class is modelled as a Gaussian with spherical
(or diagonal) covariance; GBC is ``- sum_{a != b} exp(-BD_ab)`` over the Bhattacharyya
distances ``BD`` of the class pairs, in ``[-C(C-1), 0]``: higher (closer to 0) means better
separated classes. The computation, parity with the reference and measured figures:
docs/estimators.md.

References
----------
.. [1] Pándy et al., "Transferability Estimation using Bhattacharyya Class Separability",
   CVPR 2022.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.spatial.distance

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, check_choice, is_integer, real_or_nan, register
from fennec_mlflow.errors import InvalidInputError

__all__ = ["GBC", "gbc_score", "principal_component_scores"]

GaussianType = Literal["spherical", "diagonal"]

VARIANCE_FLOOR = 1e-4
DEFAULT_COMPONENTS = 64
# Classes per block in the diagonal type's C x C x k computation (bounds memory at ~block*C*k).
_DIAGONAL_BLOCK = 64


def principal_component_scores(features: np.ndarray, n_components: int) -> np.ndarray:
    """Exact top-``k`` PCA scores ``(N, k)``, ``k = min(n_components, N, D)``.

    Solved on the smaller of the two Gram matrices: ``X_c^T X_c`` (D x D) when D <= N, else
    ``X_c X_c^T`` (N x N), asking LAPACK only for the top ``k`` eigenpairs. Signs are fixed so
    that each component's largest-magnitude score is positive (reproducible across LAPACK
    builds). Components of the numerical null space come out as (near) zero columns.
    """
    centred = features - features.mean(axis=0)
    n_samples, n_features = centred.shape
    k = min(int(n_components), n_samples, n_features)
    if n_features <= n_samples:
        gram = centred.T @ centred
        _, vectors = scipy.linalg.eigh(gram, subset_by_index=[n_features - k, n_features - 1], check_finite=False)
        scores = centred @ vectors[:, ::-1]
    else:
        gram = centred @ centred.T
        values, vectors = scipy.linalg.eigh(gram, subset_by_index=[n_samples - k, n_samples - 1], check_finite=False)
        scores = vectors[:, ::-1] * np.sqrt(np.clip(values[::-1], 0.0, None))
    rows = np.argmax(np.abs(scores), axis=0)
    signs = np.sign(scores[rows, np.arange(k)])
    signs[signs == 0] = 1.0
    return scores * signs


def class_means_and_variances(features: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class means ``(C, D)``, population variances ``(C, D)`` and counts ``(C,)``."""
    n_classes = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=n_classes)
    membership = np.zeros((n_classes, codes.size))
    membership[codes, np.arange(codes.size)] = 1.0
    means = membership @ features / counts[:, None]
    residuals = features - means[codes]
    variances = membership @ (residuals * residuals) / counts[:, None]
    return means, variances, counts


def _spherical_overlaps(means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    spread = variances.mean(axis=1)
    average = (spread[:, None] + spread[None, :]) / 2.0
    squared = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(means, "sqeuclidean"))
    log_spread = np.log(spread)
    distance = squared / average / 8.0 + 0.5 * (
        np.log(average) - 0.5 * log_spread[:, None] - 0.5 * log_spread[None, :]
    )
    return np.exp(-distance)


def _diagonal_overlaps(means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    n_classes = means.shape[0]
    log_det = np.log(variances).sum(axis=1)
    overlaps = np.empty((n_classes, n_classes))
    for start in range(0, n_classes, _DIAGONAL_BLOCK):
        stop = min(start + _DIAGONAL_BLOCK, n_classes)
        average = (variances[start:stop, None, :] + variances[None, :, :]) / 2.0
        difference = means[start:stop, None, :] - means[None, :, :]
        distance = np.einsum("abk,abk->ab", difference, difference / average) / 8.0 + 0.5 * (
            np.log(average).sum(axis=2) - 0.5 * log_det[start:stop, None] - 0.5 * log_det[None, :]
        )
        overlaps[start:stop] = np.exp(-distance)
    return overlaps


def _gbc_from_checked(features: np.ndarray, codes: np.ndarray, gaussian_type: GaussianType,
                      n_components: int | None, variance_floor: float) -> float:
    if n_components is not None:
        features = principal_component_scores(features, n_components)
    means, variances, _ = class_means_and_variances(features, codes)
    np.maximum(variances, variance_floor, out=variances)
    if gaussian_type == "spherical":
        overlaps = _spherical_overlaps(means, variances)
    else:
        overlaps = _diagonal_overlaps(means, variances)
    np.fill_diagonal(overlaps, 0.0)
    return 0.0 - float(overlaps.sum())


def gbc_score(features: np.ndarray, labels: np.ndarray, *, gaussian_type: GaussianType = "spherical",
              n_components: int | None = DEFAULT_COMPONENTS, variance_floor: float = VARIANCE_FLOOR) -> float:
    """GBC (in ``[-C(C-1), 0]``) of ``features`` for ``labels``; parameters as :class:`GBC`."""
    return GBC(gaussian_type=gaussian_type, n_components=n_components, variance_floor=variance_floor).score(
        features, labels
    )


@register
class GBC(TransferabilityEstimator):
    """GBC: minus the summed Bhattacharyya overlap of the per-class Gaussians, in ``[-C(C-1), 0]``.

    Parameters
    ----------
    gaussian_type : {"spherical", "diagonal"}, default "spherical"
        Covariance of the class Gaussians (the paper's default: spherical).
    n_components : int or None, default 64
        Principal components kept first (the reference's 64); None uses the raw features.
    variance_floor : float, default 1e-4
        Lower bound of every per-class variance (the reference's).
    """

    name = "gbc"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, gaussian_type: GaussianType = "spherical", n_components: int | None = DEFAULT_COMPONENTS,
                 variance_floor: float = VARIANCE_FLOOR):
        self.gaussian_type = gaussian_type
        self.n_components = n_components
        self.variance_floor = variance_floor

    def _validate_params(self) -> None:
        check_choice("gaussian_type", self.gaussian_type, ("spherical", "diagonal"))
        if not (self.n_components is None or is_integer(self.n_components, least=1)):
            raise InvalidInputError(
                f"n_components must be None (raw features) or a positive integer; got {self.n_components!r}"
            )
        if not (np.isfinite(real_or_nan(self.variance_floor)) and self.variance_floor > 0):
            raise InvalidInputError(f"variance_floor must be a positive number; got {self.variance_floor!r}")

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _gbc_from_checked(features, labels, self.gaussian_type, self.n_components, self.variance_floor)
