"""FDA score (Fennec, Bai et al. 2024, eq. 2-3) and SFDA (Shao et al., ECCV 2022).

What is computed
----------------
Given features ``X`` (N x D) of a probe set and its labels (C classes, priors ``pi_c``):

1. Scatter matrices (population normalisation, 1/N):
   ``S_W = sum_c pi_c Cov(X | c)`` (within-class) and
   ``S_B = sum_c pi_c (mu_c - mu)(mu_c - mu)^T`` (between-class, rank <= C-1).
2. SFDA's regularisation of ``S_W``: shrink towards a scaled identity,
   ``S_W' = (1 - s) S_W + s * trace(S_W) / D * I`` with the adaptive strength
   ``s = max(exp(-5 * lambda_max(S_W)), 1e-10)``. ``lambda_max`` is estimated as SFDA does,
   by power iteration from the all-ones vector: ``||S_W^7 1|| / ||S_W^6 1||``.
3. FDA projection: the generalised eigenproblem ``S_B u = lambda S_W' u``; keep the
   ``k = min(C-1, D)`` directions of largest ``lambda``, normalised so ``U^T S_W' U = I``
   (``f = U^T x``). We solve it as: Cholesky ``S_W' = L L^T``, thin SVD of the whitened,
   prior-weighted class means ``L^{-1} [sqrt(pi_c)(mu_c - mu)]`` (D x C), ``U = L^{-T} V``.
   That is exact (``S_B`` is the Gram matrix of those C columns) and needs one D x D Cholesky
   instead of a full D x D generalised eigendecomposition.
4. Class-conditional Gaussians with identity covariance in the projected space:
   ``logit_c(f) = f . m_c - |m_c|^2 / 2 + log pi_c`` with ``m_c = U^T mu_c``; softmax over c.
5. FDA score = ``sum_i p(y_i | f_i)`` (the paper's definition, ``reduction="sum"``) or its
   per-sample mean (``reduction="mean"``).

Which reduction the performance matrix uses: the mean. The sum grows with the probe size, so
tasks probed with more images would get larger entries and dominate the NMF of the
performance matrix (Fennec eq. 4) for a reason that has nothing to do with transferability.
The mean lies in [0, 1] like the fine-tune accuracies that can fill the same matrix, and it
is what SFDA's reference code reports. Within one task (one column) both rank models alike.

Parity with the reference (TencentARC/SFDA, ``metrics.py``: ``SFDA`` and ``SFDA_Score``)
---------------------------------------------------------------------------------------
The reference's first stage, ``SFDA().fit(X, y).predict_proba(X)``, builds the same ``S_W'``
(same ``s``) but takes ALL D generalised eigenvectors, whose outer product is exactly
``S_W'^{-1}``: its probabilities are shrinkage-LDA posteriors. Its ``transform`` (the
projection it exposes) keeps only the first C-1 eigenvectors. Our C-1 dimensional Gaussian
model reproduces those posteriors exactly: the class-mean differences, whitened, lie in the
span of the top C-1 directions and the remaining directions add the same amount to every
class logit. Measured agreement: probabilities and scores within 1e-14 (tests/test_fda.py
asserts 1e-6 against goldens captured from the reference).

Deliberate differences:

- ``S_B``. The reference (following scikit-learn's LDA eigen solver) forms
  ``S_B = shrunk(S_T) - shrunk(S_W)``, i.e. it also shrinks the between-class scatter:
  ``(1 - s) S_B + s * trace(S_B) / D * I``. We keep the paper's unshrunk ``S_B``. The
  probabilities and scores are unaffected (above); the projection directions differ from the
  reference's ``transform`` by O(s) relative. With realistic deep features (``lambda_max`` of
  ``S_W`` above ~4.6) ``s`` sits at its 1e-10 floor and the projections agree to 1e-6 relative;
  with small-scale features (say unit-variance noise, ``s`` ~ 2e-4) they differ by ~3e-5.
  With D > N, ``S_W'`` has condition number ~1/s and one ulp of roundoff in the scatter
  matrices moves either implementation's projection by ~1e-6 relative (measured 3e-6).
  Only the unshrunk ``S_B`` makes the C-1 dimensional projection and the probabilities one
  consistent model, as the paper describes; the reference's two outputs are not.
- Direction signs are fixed (largest-magnitude entry of each ``u`` positive); eigenvectors
  have no intrinsic sign. Probabilities do not depend on them.
- Labels may be any integer ids (re-coded to ``0..C-1``); the reference's ``SFDA_Score`` indexes
  probability columns with the raw labels, so it is only right for labels ``0..C-1``.
- The reference's ``SFDA_Score`` overwrites the caller's feature array during its ConfMix
  step; ours leaves the input untouched.
- If the power iteration's all-ones start vector is numerically orthogonal to ``S_W``'s range
  (e.g. every feature row sums to one, softmax outputs, so ``S_W 1 = 0`` up to roundoff), the
  reference's estimate is amplified roundoff (NaN when exactly zero); we use the exact largest
  eigenvalue there. Elsewhere our estimate is the reference's to 1e-15.

Caveat (affects the reference equally): the score is computed in-sample. When the probe has
fewer samples than feature dimensions, or not many more (``S_W`` is singular once N - C < D),
every labelling is linearly separable, ``s`` is tiny, and the score saturates at 1 for every
model, shuffled labels included (docs/benchmarks_fda.md shows it). The registered estimators
(``get_estimator("fda")``, what the performance matrix uses) therefore first keep the top
``max(C, N // 10)`` principal components (``max_dim="auto"``); the functions ``fda_score`` /
``sfda_score`` score raw features unless given ``max_dim``.

SFDA (``sfda_score``) adds the "self-challenging" second stage of the SFDA paper: soften the
first-stage posteriors with a softmax, move every sample towards the mean of the other classes'
means by one minus its softened true-class posterior (ConfMix), refit the same model on the
mixed features with the first stage's ``s``, and average the true-class posteriors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.special

from fennec_mlflow.core.estimators.base import (
    TransferabilityEstimator,
    check_features,
    check_labels,
    register,
)

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
# SFDA estimates lambda_max with 7 products by S_W from the all-ones vector; the same count
# keeps our shrinkage, hence our scores, equal to the reference's, not just close to them.
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
        # Centring changes every class logit by the same amount, so the posteriors are
        # unchanged; it avoids cancellation when features share a large offset (ReLU outputs).
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
    # ||A 1|| >= lambda_max * |cos(1, top eigenvector)| * sqrt(n). When the all-ones start is
    # (numerically) orthogonal to A's range, e.g. feature rows that all sum to one, the
    # iteration would only amplify roundoff, so ask LAPACK for the exact value instead.
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
    if shrinkage is not None and not (0.0 <= float(shrinkage) <= 1.0):
        raise ValueError(f"shrinkage must be None (SFDA's adaptive rule) or in [0, 1]; got {shrinkage!r}")


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")


def _cholesky_of_regularised_scatter(within_scatter: np.ndarray, shrinkage: float) -> np.ndarray:
    regularised = _shrink_towards_scaled_identity(within_scatter, shrinkage)
    try:
        return scipy.linalg.cholesky(regularised, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"the regularised within-class scatter is singular (shrinkage={shrinkage:g}, "
            f"{within_scatter.shape[0]} features); use a larger shrinkage, or None for SFDA's adaptive rule"
        ) from None


def _orient(directions: np.ndarray) -> np.ndarray:
    # Eigenvectors have no sign; make each column's largest-magnitude entry positive so the
    # projection is reproducible across LAPACK builds.
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
    elif not 1 <= n_components <= max_components:
        raise ValueError(
            f"n_components must be in [1, min(n_classes - 1, n_features)] = [1, {max_components}]; "
            f"got {n_components}"
        )
    within = _within_class_scatter(features, codes, class_means)
    if np.trace(within) <= 0.0:
        raise ValueError(
            "features do not vary within any class (within-class scatter is zero); "
            "the FDA score is undefined for such features"
        )
    strength = sfda_shrinkage(within) if shrinkage is None else float(shrinkage)
    lower = _cholesky_of_regularised_scatter(within, strength)
    # S_B = B^T B with rows sqrt(pi_c) (mu_c - mu); in the S_W'-whitened space its
    # eigenvectors are the left singular vectors of the whitened B^T.
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
    # SFDA softens the posteriors with a second softmax so the mixing weights stay away
    # from 0 and 1 ("meaningful confidential mixture" in the reference).
    confidence = _true_class_probabilities(scipy.special.softmax(first.predict_proba(features), axis=1), codes)
    n_classes = first.class_means.shape[0]
    # ConfMix: pull each sample towards the unweighted mean of the OTHER classes' means,
    # the harder the less confident the first stage was; hard tasks get harder.
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
    """Fit the FDA projection (``n_components`` defaults to ``min(C-1, D)``) and its class model.

    ``shrinkage``: None for SFDA's adaptive rule, or a fixed strength in [0, 1].
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
    """FDA score: true-class posterior summed (``"sum"``, the paper) or averaged (``"mean"``) over samples.

    Scores the raw features by default (``max_dim=None``, as the paper); see :class:`FDA`.
    """
    return FDA(shrinkage=shrinkage, reduction=reduction, max_dim=max_dim).score(features, labels)


def sfda_score(features: np.ndarray, labels: np.ndarray, *, shrinkage: float | None = None,
               max_dim: int | str | None = None) -> float:
    """SFDA score (Shao et al. 2022): FDA, ConfMix self-challenge, FDA again; mean true-class posterior."""
    return SFDA(shrinkage=shrinkage, max_dim=max_dim).score(features, labels)


def auto_max_dim(n_samples: int, n_classes: int) -> int:
    """Feature dimensions the in-sample FDA score can use on ``n_samples`` without saturating.

    Measured (docs/benchmarks_fda.md): at N=500, C=10, shuffled labels already score 0.26 at
    D=64, 0.53 at D=128 and 1.0 from D=512; so keep about one dimension per ten samples.
    """
    return max(n_classes, n_samples // 10)


def principal_components(features: np.ndarray, max_dim: int) -> np.ndarray:
    """``features`` projected on their top ``max_dim`` principal directions (unchanged if D <= max_dim).

    FDA is invariant to invertible linear maps of the features (up to the shrinkage), so this
    only drops the lowest-variance directions, the ones an in-sample fit would overfit.
    """
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


def _check_max_dim(max_dim: int | str | None) -> None:
    if not (max_dim is None or max_dim == "auto" or (isinstance(max_dim, int) and max_dim >= 1)):
        raise ValueError(f"max_dim must be None, 'auto' or a positive integer; got {max_dim!r}")


@register
class FDA(TransferabilityEstimator):
    """Fennec's FDA score (eq. 2-3) as a registered estimator; ``reduction="mean"`` by default.

    ``max_dim="auto"`` (default) first projects the features on their top
    :func:`auto_max_dim` principal components, so probes with N not far above D (N=500 probes
    of 2048-D ResNet features) do not saturate at 1.0 for every model; ``None`` scores the raw
    features exactly as the paper and the reference do.
    """

    name = "fda"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, shrinkage: float | None = None, reduction: Reduction = "mean",
                 max_dim: int | str | None = "auto"):
        _check_shrinkage(shrinkage)
        _check_reduction(reduction)
        _check_max_dim(max_dim)
        self.shrinkage = shrinkage
        self.reduction = reduction
        self.max_dim = max_dim

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        features = _capped(features, labels, self.max_dim)
        projection = _fit_fisher_projection(features, labels, self.shrinkage, None)
        return _reduce(_true_class_probabilities(projection.predict_proba(features), labels), self.reduction)


@register
class SFDA(TransferabilityEstimator):
    """SFDA score (Shao et al., ECCV 2022): FDA plus the ConfMix self-challenging stage.

    ``max_dim`` as for :class:`FDA` (default ``"auto"``; ``None`` = the reference's behaviour).
    """

    name = "sfda"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, shrinkage: float | None = None, max_dim: int | str | None = "auto"):
        _check_shrinkage(shrinkage)
        _check_max_dim(max_dim)
        self.shrinkage = shrinkage
        self.max_dim = max_dim

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        return _sfda_from_checked(_capped(features, labels, self.max_dim), labels, self.shrinkage)
