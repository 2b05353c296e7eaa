"""PARC: agreement between the samples' feature dissimilarities and their label dissimilarities.

The features are reduced to their top ``n_dims`` principal components and standardised; PARC
is 100 times the Spearman correlation between the pairwise dissimilarities ``1 - corr(x_i,
x_j)`` of the samples' features and those of their one-hot labels, in [-100, 100]. The
default PCA reproduces the reference's seeded randomised sketch step by step. The
computation, parity with the reference and measured figures: docs/estimators.md.

References
----------
.. [1] Bolya et al., "Scalable Diverse Model Selection for Accessible Transfer Learning",
   NeurIPS 2021.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.stats

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, check_choice, is_integer, register
from fennec_mlflow.errors import InvalidInputError

__all__ = ["PARC", "parc_score", "randomized_pca_scores", "reference_pca_scores"]

PcaSolver = Literal["randomized", "full"]

# The reference's PCA(svd_solver='randomized', random_state=1919, iterated_power=1), 10 oversamples.
REFERENCE_SEED = 1919
REFERENCE_POWER_ITERATIONS = 1
REFERENCE_OVERSAMPLES = 10
# Components whose singular value is below this fraction of the largest are numerical null space.
RANK_TOLERANCE = 1e-10


def _orient_by_components(scores: np.ndarray, components: np.ndarray) -> np.ndarray:
    """scikit-learn's PCA sign rule: each component's largest-magnitude loading is positive."""
    rows = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), rows])
    signs[signs == 0] = 1.0
    return scores * signs


def randomized_pca_scores(features: np.ndarray, n_components: int, *, seed: int, power_iterations: int,
                          lu_normalizer: bool = False, oversamples: int = REFERENCE_OVERSAMPLES) -> np.ndarray:
    """Approximate top-``k`` PCA scores ``(N, k)`` by Halko et al.'s sketch, step for step as
    scikit-learn's ``PCA(svd_solver='randomized', random_state=seed)`` computes them.

    Centre; work on the transpose when N < D; Gaussian test matrix of ``k + oversamples``
    columns drawn from ``numpy.random.RandomState(seed)``; ``power_iterations`` products by
    ``A`` and ``A^T``, each renormalised by a pivoted LU factor when ``lu_normalizer``
    (scikit-learn's choice for more than two iterations); QR; SVD of the small projected matrix;
    scikit-learn's signs (each component's largest-magnitude loading positive). Components
    beyond the numerical rank are dropped, so ``k <= min(n_components, N, D)``.
    """
    centred = features - features.mean(axis=0)
    n_samples, n_features = centred.shape
    k = min(n_components, n_samples, n_features)
    transpose = n_samples < n_features
    matrix = centred.T if transpose else centred
    sketch = np.random.RandomState(seed).normal(size=(matrix.shape[1], k + oversamples))

    def normalise(block: np.ndarray) -> np.ndarray:
        return scipy.linalg.lu(block, permute_l=True, check_finite=False)[0] if lu_normalizer else block

    for _ in range(power_iterations):
        sketch = normalise(matrix @ sketch)
        sketch = normalise(matrix.T @ sketch)
    basis, _ = scipy.linalg.qr(matrix @ sketch, mode="economic", check_finite=False)
    small_left, singular_values, small_right = scipy.linalg.svd(
        basis.T @ matrix, full_matrices=False, lapack_driver="gesdd", check_finite=False
    )
    singular_values = singular_values[:k]
    if transpose:
        left, right = small_right[:k].T, (basis @ small_left[:, :k]).T
    else:
        left, right = (basis @ small_left)[:, :k], small_right[:k]
    return _scores_within_rank(left, singular_values, right)


def _scores_within_rank(left: np.ndarray, singular_values: np.ndarray, right: np.ndarray) -> np.ndarray:
    if singular_values.size == 0 or singular_values[0] <= 0.0:
        return np.zeros((left.shape[0], 0))
    rank = int(np.count_nonzero(singular_values > RANK_TOLERANCE * singular_values[0]))
    return _orient_by_components(left[:, :rank] * singular_values[:rank], right[:rank])


def reference_pca_scores(features: np.ndarray, n_components: int, *, solver: PcaSolver = "randomized") -> np.ndarray:
    """PCA scores ``(N, k)`` of ``features`` as the PARC reference computes them.

    ``solver="randomized"``: the sketch with the reference's fixed seed (1919), one power
    iteration, no renormalisation, ten oversamples. ``solver="full"``: exact principal
    components. Components beyond the numerical rank are dropped.
    """
    if solver == "randomized":
        return randomized_pca_scores(features, n_components, seed=REFERENCE_SEED,
                                     power_iterations=REFERENCE_POWER_ITERATIONS)
    centred = features - features.mean(axis=0)
    k = min(n_components, *centred.shape)
    left, singular_values, right = scipy.linalg.svd(centred, full_matrices=False, check_finite=False)
    return _scores_within_rank(left[:, :k], singular_values[:k], right[:k])


def _standardise_columns(matrix: np.ndarray) -> np.ndarray:
    centred = matrix - matrix.mean(axis=0)
    scale = np.sqrt(np.mean(centred**2, axis=0))
    scale[scale == 0.0] = 1.0
    return centred / scale


def _row_correlations(matrix: np.ndarray) -> np.ndarray:
    """Pearson correlation between rows (``np.corrcoef``); rows without variance correlate 0."""
    centred = matrix - matrix.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", centred, centred))
    degenerate = norms <= np.finfo(np.float64).eps * np.sqrt(matrix.shape[1]) * max(float(np.abs(matrix).max()), 1.0)
    norms[degenerate] = 1.0
    unit = centred / norms[:, None]
    unit[degenerate] = 0.0
    correlations = unit @ unit.T
    np.clip(correlations, -1.0, 1.0, out=correlations)
    return correlations


def _parc_from_checked(features: np.ndarray, labels: np.ndarray, n_dims: int | None, pca_solver: PcaSolver) -> float:
    if n_dims is None:
        reduced = features
    else:
        reduced = reference_pca_scores(features, n_dims, solver=pca_solver)
    standardised = _standardise_columns(reduced)
    varying = int(np.count_nonzero(np.any(standardised != 0.0, axis=0)))
    if varying < 2:
        raise InvalidInputError(
            f"PARC needs features that vary along at least 2 directions; these vary along {varying} "
            "(constant or rank-one features), so the sample-to-sample correlations are undefined"
        )
    n_samples = standardised.shape[0]
    upper = np.triu_indices(n_samples, 1)
    feature_dissimilarity = (1.0 - _row_correlations(standardised))[upper]
    different_class = labels[upper[0]] != labels[upper[1]]
    return 100.0 * _rank_biserial_correlation(feature_dissimilarity, different_class)


def _rank_biserial_correlation(values: np.ndarray, indicator: np.ndarray) -> float:
    """Pearson correlation between the average ranks of ``values`` and a boolean ``indicator``.

    Equals ``scipy.stats.spearmanr(values, indicator)``. Without ties in ``values`` (the usual
    case for continuous dissimilarities) the ranks are a permutation of 1..M with known mean and
    variance, so one argsort suffices; with ties, average ranks as scipy assigns them.
    """
    n_values = values.size
    n_ones = int(np.count_nonzero(indicator))
    if n_ones in (0, n_values):
        return 0.0
    order = np.argsort(values)
    ordered = values[order]
    if np.any(ordered[1:] == ordered[:-1]):
        ranks = scipy.stats.rankdata(values)
    else:
        ranks = np.empty(n_values)
        ranks[order] = np.arange(1.0, n_values + 1.0)
    share = n_ones / n_values
    mean_rank = ranks.mean()
    covariance = ranks[indicator].sum() / n_values - mean_rank * share
    rank_variance = np.mean((ranks - mean_rank) ** 2)
    if rank_variance == 0.0:
        # Every pair equally dissimilar: no ordering to agree with the labels.
        return 0.0
    return float(covariance / np.sqrt(rank_variance * share * (1.0 - share)))


def parc_score(features: np.ndarray, labels: np.ndarray, *, n_dims: int | None = 32,
               pca_solver: PcaSolver = "randomized") -> float:
    """PARC (in [-100, 100]) of ``features`` for ``labels``; parameters as :class:`PARC`."""
    return PARC(n_dims=n_dims, pca_solver=pca_solver).score(features, labels)


@register
class PARC(TransferabilityEstimator):
    """PARC: 100 x the Spearman agreement of feature and label dissimilarities, in [-100, 100].

    Parameters
    ----------
    n_dims : int >= 2 or None, default 32
        Principal components kept before comparing samples (the paper's 32); None compares
        the raw features.
    pca_solver : {"randomized", "full"}, default "randomized"
        The reference's seeded randomised sketch, or exact principal components.
    """

    name = "parc"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, n_dims: int | None = 32, pca_solver: PcaSolver = "randomized"):
        self.n_dims = n_dims
        self.pca_solver = pca_solver

    def _validate_params(self) -> None:
        if not (self.n_dims is None or is_integer(self.n_dims, least=2)):
            raise InvalidInputError(f"n_dims must be None (no reduction) or an integer >= 2; got {self.n_dims!r}")
        check_choice("pca_solver", self.pca_solver, ("randomized", "full"))

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _parc_from_checked(features, labels, self.n_dims, self.pca_solver)

