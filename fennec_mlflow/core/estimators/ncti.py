"""NCTI's three neural-collapse terms, each a registered estimator, and their combination.

After PCA to 64 dimensions and a linear discriminant analysis (as scikit-learn's), the terms
are ``S_ncc``, the mean true-class posterior; ``S_seli``, the nuclear norm of the centred
discriminant projection; and ``S_vc = log sum_c ||P_c||_*``, the within-class variability of
the posteriors (registered negated, so that higher is better for every estimator). NCTI ranks
models by ``minmax(S_ncc) + minmax(S_seli) - minmax(S_vc)`` over the candidates of a task,
:func:`ncti_combine`. The computation, parity with the reference and measured figures:
docs/estimators.md.

References
----------
.. [1] Wang et al., "How Far Pre-trained Models Are from Neural Collapse on the Target Dataset
   Informs their Transferability", ICCV 2023.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.linalg
import scipy.special

from fennec_mlflow.core.estimators.base import (
    TransferabilityEstimator,
    check_choice,
    check_features,
    check_labels,
    is_integer,
    register,
)
from fennec_mlflow.core.estimators.gbc import principal_component_scores
from fennec_mlflow.core.estimators.parc import randomized_pca_scores
from fennec_mlflow.errors import InvalidInputError

__all__ = ["NCTIComponents", "ncti_components", "ncti_combine", "NCTINcc", "NCTISeli", "NCTIVc"]

PcaSolver = Literal["auto", "full"]

PCA_COMPONENTS = 64
VARIANCE_COMPONENTS = 32
SHRINKAGE_FLOOR = 1e-10
# scikit-learn's LinearDiscriminantAnalysis(tol=1e-4): rank threshold of the svd solver.
SVD_SOLVER_TOL = 1e-4
RANK_TOLERANCE = 1e-10
# Within-class spread below this fraction of the total (in norm) is roundoff: classes are points.
COLLAPSE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class NCTIComponents:
    """The three NCTI terms of one (model, task) probe, as the paper defines them.

    ``ncc`` and ``seli``: higher is better; ``vc``: lower is better.
    """

    ncc: float
    seli: float
    vc: float
    shrinkage: float


def reference_solver_is_randomized(n_samples: int, n_features: int, n_components: int = PCA_COMPONENTS) -> bool:
    """Whether scikit-learn's ``PCA(svd_solver='auto')`` picks its randomised solver for this shape.

    The rule (scikit-learn 1.9.1; the same outcome in the versions the NCTI authors used):
    exact for ``D <= 1000 and N >= 10 D`` or ``max(N, D) <= 500``; randomised when
    ``n_components < 0.8 min(N, D)``; exact otherwise.
    """
    if n_features <= 1000 and n_samples >= 10 * n_features:
        return False
    if max(n_samples, n_features) <= 500:
        return False
    return 1 <= n_components < 0.8 * min(n_samples, n_features)


def _reduce(features: np.ndarray, pca_solver: PcaSolver, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    n_samples, n_features = features.shape
    if pca_solver == "auto" and reference_solver_is_randomized(n_samples, n_features):
        # scikit-learn's iterated_power="auto" and power_iteration_normalizer="auto".
        iterations = 7 if PCA_COMPONENTS < 0.1 * min(n_samples, n_features) else 4
        scores = randomized_pca_scores(features, PCA_COMPONENTS, seed=random_state, power_iterations=iterations,
                                       lu_normalizer=True)
    else:
        scores = principal_component_scores(features, PCA_COMPONENTS)
    variances = np.einsum("ij,ij->j", scores, scores) / (n_samples - 1)
    if variances.size == 0 or variances[0] <= 0.0:
        return scores[:, :0], variances[:0]
    keep = variances > RANK_TOLERANCE**2 * variances[0]
    return scores[:, keep], variances[keep]


def _class_statistics(features: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_classes = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=n_classes)
    membership = np.zeros((n_classes, codes.size))
    membership[codes, np.arange(codes.size)] = 1.0
    return membership @ features / counts[:, None], counts / codes.size


def _svd_solver(features: np.ndarray, codes: np.ndarray, means: np.ndarray, priors: np.ndarray):
    """scikit-learn's svd solver: (projection directions incl. offset, posterior logits)."""
    n_samples = features.shape[0]
    n_classes = means.shape[0]
    centre = priors @ means
    within = features - means[codes]
    std = within.std(axis=0)
    std[std == 0] = 1.0
    _, singular, right = scipy.linalg.svd(within / std / np.sqrt(n_samples), full_matrices=False, check_finite=False)
    rank = int(np.count_nonzero(singular > SVD_SOLVER_TOL))
    whitening = (right[:rank] / std).T / singular[:rank]
    weighted = (np.sqrt(n_samples * priors / (n_classes - 1))[:, None] * (means - centre)) @ whitening
    _, between_singular, between_right = scipy.linalg.svd(weighted, full_matrices=False, check_finite=False)
    between_rank = int(np.count_nonzero(between_singular > SVD_SOLVER_TOL * between_singular[0]))
    scalings = whitening @ between_right.T[:, :between_rank]
    projected_means = (means - centre) @ scalings
    projected = (features - centre) @ scalings
    norms = np.einsum("ck,ck->c", projected_means, projected_means)
    logits = projected @ projected_means.T - 0.5 * norms + np.log(priors)
    return projected, logits


def _eigen_solver(features: np.ndarray, codes: np.ndarray, means: np.ndarray, priors: np.ndarray, shrinkage: float):
    """scikit-learn's eigen solver with a fixed shrinkage: (projection, posterior logits)."""
    n_samples, n_dims = features.shape
    n_classes = means.shape[0]

    def shrunk(scatter: np.ndarray) -> np.ndarray:
        result = (1.0 - shrinkage) * scatter
        result.flat[:: n_dims + 1] += shrinkage * np.trace(scatter) / n_dims
        return result

    within = features - means[codes]
    centred = features - features.mean(axis=0)
    within_scatter = shrunk(within.T @ within / n_samples)
    between_scatter = shrunk(centred.T @ centred / n_samples) - within_scatter
    n_directions = min(n_classes - 1, n_dims)
    _, directions = scipy.linalg.eigh(
        between_scatter, within_scatter, subset_by_index=[n_dims - n_directions, n_dims - 1], check_finite=False
    )
    projected = features @ directions
    # coef = means @ S_W'^{-1} (the reference's means @ V V^T over all generalised eigenvectors).
    factor = scipy.linalg.cho_factor(within_scatter, lower=True, check_finite=False)
    coefficients = scipy.linalg.cho_solve(factor, means.T, check_finite=False)
    logits = features @ coefficients - 0.5 * np.einsum("cd,dc->c", means, coefficients) + np.log(priors)
    return projected, logits


def _components_from_checked(features: np.ndarray, codes: np.ndarray, pca_solver: PcaSolver = "auto",
                             random_state: int = 0) -> NCTIComponents:
    reduced, variances = _reduce(features, pca_solver, random_state)
    shrinkage = max(float(np.exp(-variances[:VARIANCE_COMPONENTS].sum())), SHRINKAGE_FLOOR)
    means, priors = _class_statistics(reduced, codes)
    n_classes = priors.size
    within = reduced - means[codes]
    if reduced.shape[1] > 0 and np.einsum("ij,ij->", within, within) <= COLLAPSE_TOLERANCE**2 * np.einsum(
        "ij,ij->", reduced, reduced
    ):
        raise InvalidInputError(
            "features do not vary within any class (every class is a single point: complete neural "
            "collapse); the LDA posteriors and the NCTI terms are undefined for such features"
        )
    if reduced.shape[1] == 0:
        posteriors = np.broadcast_to(priors, (codes.size, n_classes))
        seli = 0.0
    else:
        if shrinkage == SHRINKAGE_FLOOR:
            projected, logits = _svd_solver(reduced, codes, means, priors)
        else:
            projected, logits = _eigen_solver(reduced, codes, means, priors, shrinkage)
        projected = projected[:, : min(n_classes - 1, reduced.shape[1])]
        projected = projected - projected.mean(axis=0)
        seli = float(np.linalg.svd(projected, compute_uv=False).sum())
        posteriors = scipy.special.softmax(logits, axis=1)
    ncc = float(posteriors[np.arange(codes.size), codes].mean())
    nuclear = sum(float(np.linalg.svd(posteriors[codes == c], compute_uv=False).sum()) for c in range(n_classes))
    return NCTIComponents(ncc=ncc, seli=seli, vc=float(np.log(nuclear)), shrinkage=shrinkage)


def ncti_components(features: np.ndarray, labels: np.ndarray, *, pca_solver: PcaSolver = "auto",
                    random_state: int = 0) -> NCTIComponents:
    """The three NCTI terms of one probe, from one PCA and one LDA fit.

    Parameters
    ----------
    features : array of shape (n_samples, n_features)
    labels : array of shape (n_samples,)
    pca_solver : {"auto", "full"}, default "auto"
        ``"auto"``: scikit-learn's choice of PCA solver, as the reference makes it, with the
        randomised one seeded; ``"full"``: always the exact PCA.
    random_state : int in [0, 2**32), default 0
        Seed of the randomised PCA.

    Returns
    -------
    NCTIComponents
    """
    _check_params(pca_solver, random_state)
    checked = check_features(features)
    return _components_from_checked(checked, check_labels(labels, n_samples=checked.shape[0]), pca_solver,
                                    random_state)


def _check_params(pca_solver: str, random_state: int) -> None:
    check_choice("pca_solver", pca_solver, ("auto", "full"))
    if not (is_integer(random_state, least=0) and random_state < 2**32):
        raise InvalidInputError(f"random_state must be an integer in [0, 2**32); got {random_state!r}")


def _min_max(values: np.ndarray) -> np.ndarray:
    spread = values.max() - values.min()
    if spread == 0.0:
        return np.zeros_like(values)
    return (values - values.min()) / spread


def ncti_combine(components: Any) -> np.ndarray:
    """NCTI scores of the candidate models of ONE task: ``minmax(ncc) + minmax(seli) - minmax(vc)``.

    ``components``: a sequence of :class:`NCTIComponents` (one per model), or an array
    ``(n_models, 3)`` of ``(ncc, seli, vc)`` with ``vc`` as the paper defines it (lower is better).
    """
    if len(components) and isinstance(components[0], NCTIComponents):
        table = np.array([[c.ncc, c.seli, c.vc] for c in components], dtype=np.float64)
    else:
        table = np.asarray(components, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 3 or table.shape[0] == 0:
        raise InvalidInputError(f"components must be one (ncc, seli, vc) triple per model; got shape {table.shape}")
    if not np.isfinite(table).all():
        raise InvalidInputError("components must be finite")
    return _min_max(table[:, 0]) + _min_max(table[:, 1]) - _min_max(table[:, 2])


class _NCTITerm(TransferabilityEstimator):
    """One NCTI term; subclasses name the term (an :class:`NCTIComponents` field) and its sign."""

    term: ClassVar[str] = ""
    sign: ClassVar[float] = 1.0
    requires_labels = True
    requires_source_logits = False

    def __init__(self, pca_solver: PcaSolver = "auto", random_state: int = 0):
        self.pca_solver = pca_solver
        self.random_state = random_state

    def _validate_params(self) -> None:
        _check_params(self.pca_solver, self.random_state)

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        components = _components_from_checked(features, labels, self.pca_solver, self.random_state)
        return self.sign * getattr(components, self.term)


@register
class NCTINcc(_NCTITerm):
    """NCTI's nearest-class-centre term ``S_ncc``: mean true-class LDA posterior, in [0, 1].

    Parameters
    ----------
    pca_solver, random_state
        As for :func:`ncti_components`.
    """

    name = "ncti_ncc"
    term = "ncc"


@register
class NCTISeli(_NCTITerm):
    """NCTI's singularity term ``S_seli``: nuclear norm of the centred LDA projection.

    Parameters
    ----------
    pca_solver, random_state
        As for :func:`ncti_components`.
    """

    name = "ncti_seli"
    term = "seli"


@register
class NCTIVc(_NCTITerm):
    """Minus NCTI's variability-collapse term, ``-S_vc = -log sum_c ||P_c||_*`` (higher is better).

    Parameters
    ----------
    pca_solver, random_state
        As for :func:`ncti_components`.
    """

    name = "ncti_vc"
    term = "vc"
    sign = -1.0
