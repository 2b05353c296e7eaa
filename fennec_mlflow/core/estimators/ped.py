"""PED, potential energy decline (Li et al., "Exploring Model Transferability through the Lens of
Potential Energy", ICCV 2023).

PED simulates the first steps of fine-tuning as a physical system: each class is a charged
ball (centre = class mean, radius = ``nsigma`` times the class's total standard deviation) and
overlapping balls repel each other. The features are moved by a few steps of that motion,
then scored by an ordinary transferability estimator (SFDA in the paper's main results).

What is computed
----------------
1. Rescale features ``x -> (x - m) / max(sd, eps)`` with the mean ``m`` and standard deviation
   ``sd`` of a feature distribution: the model's features of a general set (ImageNet val in
   the paper) when given (``general_features`` of :func:`ped_score`), else the probe's own
   (the registered estimator, which has no second input).
2. One step: class means ``mu_c`` and radii ``R_c = sqrt(sum_d Var(x_d | c))`` (population).
   For each pair of classes with overlap ``F_ab = max(nsigma (R_a + R_b) - |mu_a - mu_b|, 0)``,
   class ``a`` moves away from ``b`` by ``min(constant * time_step^2 / 2, 1) * F_ab`` along
   ``(mu_a - mu_b) / |mu_a - mu_b|``; every sample moves with its class. The step's "position
   change" is the summed absolute displacement (all classes, all dimensions, rescaled units).
3. Repeat while a step's position change exceeds ``exit_ratio`` times the first step's, at most
   ``max_steps = 6`` steps (the reference's loop). The first step is always taken (unless it
   moves nothing).
4. Undo the rescaling and score the moved features with ``score_with`` (``"sfda"``: our SFDA,
   ``fda.py``, the same computation as the reference's ``SFDA_Score``; any other registered estimator that needs labels
   and no source logits works too, e.g. ``"logme"``, as the reference's ``type`` option).

Every step is O(N D + C^2 D): class statistics, then all pairwise displacements as one
C x C weight matrix times the class means, where the reference materialises C x C x D arrays.

Defaults are the reference's command line (``evaluate_metric_cpu.py``): ``time_step=0.1``,
``nsigma=0.6`` (its function default is 2.0; the authors name 0.3 and 0.6 as the candidates),
``exit_ratio=0.5``, ``constant=1``, ``eps=1e-3``.

Parity with the reference (lixiaotong97/PED ``metrics.py``: ``PED_Score`` / ``One_Step_PED``)
-------------------------------------------------------------------------------------------
With ``general_X`` equal to the probe (our estimator's rescaling) and with a separate general
set (:func:`ped_score`'s ``general_features``), at the reference's defaults and at
``nsigma=2``, the scores agree within 1e-15 relative (tests assert 1e-10); the final SFDA is
``fda.sfda_score``, itself matched to the SFDA reference (tests/test_fda.py).

Deliberate differences:

- Rescaling: the reference requires ImageNet features of the same model (``general_X``) and
  raises ``NotImplementedError`` without them. The registered estimator rescales with the
  probe's own statistics; pass ``general_features`` to :func:`ped_score` for the paper's setup.
- Two classes with identical means but overlapping radii have no repulsion direction; the
  reference divides 0 by 0 and every feature turns NaN. We leave such a pair in place
  (zero force between them). Likewise a first step that moves nothing ends the motion
  (the reference computes 0/0 for the ratio and stops too, without the NaN).
- ``max_dim``: the registered estimator first keeps the moved features' top
  ``max(C, N // 10)`` principal components (``max_dim="auto"``, exact PCA), then scores them,
  like the package's registered SFDA does to avoid saturating when N is not well above D (see
  ``fda.py``); ``max_dim=None`` scores the raw moved features as the reference does (what the
  parity tests use; :func:`ped_score`'s default). The reduction applies to any ``score_with``.
- Constant features: the motion leaves them as they are and SFDA raises its ``ValueError``
  (no within-class variation); in the reference the 0/0 direction turns them NaN and its
  SFDA's eigensolver raises on the NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.spatial.distance

from fennec_mlflow.core.estimators.base import (
    TransferabilityEstimator,
    check_features,
    check_labels,
    get_estimator,
    register,
)
from fennec_mlflow.core.estimators.fda import auto_max_dim
from fennec_mlflow.core.estimators.gbc import principal_component_scores

__all__ = ["PED", "ped_motion", "ped_score"]

DEFAULT_TIME_STEP = 0.1
DEFAULT_NSIGMA = 0.6
DEFAULT_EXIT_RATIO = 0.5
DEFAULT_CONSTANT = 1.0
DEFAULT_EPS = 1e-3
DEFAULT_MAX_STEPS = 6


def _membership(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_classes = int(codes.max()) + 1
    membership = np.zeros((n_classes, codes.size))
    membership[codes, np.arange(codes.size)] = 1.0
    return membership, np.bincount(codes, minlength=n_classes)


def _class_displacements(scaled: np.ndarray, codes: np.ndarray, membership: np.ndarray, counts: np.ndarray,
                         time_step: float, nsigma: float, constant: float) -> np.ndarray:
    """One step's displacement of every class ``(C, D)``, in rescaled units."""
    means = membership @ scaled / counts[:, None]
    residuals = scaled - means[codes]
    radii = np.sqrt(np.bincount(codes, weights=np.einsum("ij,ij->i", residuals, residuals)) / counts)
    distances = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(means))
    overlap = np.maximum(abs(nsigma) * (radii[:, None] + radii[None, :]) - distances, 0.0)
    np.fill_diagonal(overlap, 0.0)
    magnitude = np.minimum(0.5 * time_step**2 * constant * overlap, overlap)
    # Pairs with coincident means have no direction to push along: no force (see docstring).
    weights = np.divide(magnitude, distances, out=np.zeros_like(magnitude), where=distances > 0.0)
    # sum_b w_ab (mu_a - mu_b) as a matrix product; centring the means first avoids cancellation.
    centred = means - means.mean(axis=0)
    return weights.sum(axis=1)[:, None] * centred - weights @ centred


def ped_motion(features: np.ndarray, labels: np.ndarray, *, general_features: np.ndarray | None = None,
               time_step: float = DEFAULT_TIME_STEP, nsigma: float = DEFAULT_NSIGMA,
               exit_ratio: float = DEFAULT_EXIT_RATIO, constant: float = DEFAULT_CONSTANT,
               eps: float = DEFAULT_EPS, max_steps: int = DEFAULT_MAX_STEPS) -> tuple[np.ndarray, int]:
    """Features after PED's potential-energy motion (float64, same shape) and the steps taken."""
    _check_params(time_step, nsigma, exit_ratio, constant, eps, max_steps)
    checked = check_features(features)
    codes = check_labels(labels, n_samples=checked.shape[0])
    return _motion_from_checked(checked, codes, _rescaling(checked, general_features, eps),
                                time_step, nsigma, exit_ratio, constant, max_steps)


def _rescaling(features: np.ndarray, general_features: np.ndarray | None, eps: float) -> tuple[np.ndarray, np.ndarray]:
    reference = features
    if general_features is not None:
        reference = check_features(general_features)
        if reference.shape[1] != features.shape[1]:
            raise ValueError(
                f"general_features has {reference.shape[1]} columns but features has {features.shape[1]}"
            )
    return reference.mean(axis=0), np.maximum(reference.std(axis=0), eps)


def _motion_from_checked(features: np.ndarray, codes: np.ndarray, rescaling: tuple[np.ndarray, np.ndarray],
                         time_step: float, nsigma: float, exit_ratio: float, constant: float,
                         max_steps: int) -> tuple[np.ndarray, int]:
    mean, scale = rescaling
    membership, counts = _membership(codes)
    scaled = (features - mean) / scale
    first_change = None
    steps = 0
    while steps < max_steps:
        displacement = _class_displacements(scaled, codes, membership, counts, time_step, nsigma, constant)
        change = float(np.abs(displacement).sum())
        if first_change is None:
            first_change = change
        if first_change == 0.0 or change / first_change <= exit_ratio:
            break
        scaled = scaled + displacement[codes]
        steps += 1
    return scaled * scale + mean, steps


def _check_params(time_step: float, nsigma: float, exit_ratio: float, constant: float, eps: float,
                  max_steps: int) -> None:
    for label, value in (("time_step", time_step), ("nsigma", nsigma), ("exit_ratio", exit_ratio),
                         ("constant", constant), ("eps", eps)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{label} must be a finite non-negative number; got {value!r}")
    if eps == 0:
        raise ValueError("eps must be positive: it bounds the rescaling's standard deviations away from 0")
    if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
        raise ValueError(f"max_steps must be a positive integer; got {max_steps!r}")


def _final_estimator(score_with: str) -> TransferabilityEstimator:
    estimator = get_estimator(score_with)
    if estimator.requires_source_logits or not estimator.requires_labels:
        raise ValueError(
            f"PED scores its moved features with a labelled, feature-only estimator; {score_with!r} "
            f"{'needs source_logits' if estimator.requires_source_logits else 'does not use labels'}"
        )
    if "max_dim" in estimator.get_params():
        # PED does the reduction itself (below), once, with the fast exact PCA.
        estimator = get_estimator(score_with, **{**estimator.get_params(), "max_dim": None})
    return estimator


def _check_max_dim(max_dim: int | str | None) -> None:
    if not (max_dim is None or max_dim == "auto" or (isinstance(max_dim, (int, np.integer)) and max_dim >= 1)):
        raise ValueError(f"max_dim must be None, 'auto' or a positive integer; got {max_dim!r}")


def _score_moved(moved: np.ndarray, codes: np.ndarray, score_with: str, max_dim: int | str | None) -> float:
    if max_dim is not None:
        limit = auto_max_dim(moved.shape[0], int(codes.max()) + 1) if max_dim == "auto" else int(max_dim)
        if moved.shape[1] > limit:
            moved = principal_component_scores(moved, limit)
    return _final_estimator(score_with).score(moved, codes)


def ped_score(features: np.ndarray, labels: np.ndarray, *, general_features: np.ndarray | None = None,
              score_with: str = "sfda", max_dim: int | str | None = None, time_step: float = DEFAULT_TIME_STEP,
              nsigma: float = DEFAULT_NSIGMA, exit_ratio: float = DEFAULT_EXIT_RATIO,
              constant: float = DEFAULT_CONSTANT, eps: float = DEFAULT_EPS,
              max_steps: int = DEFAULT_MAX_STEPS) -> float:
    """PED score: ``score_with`` of the features after the potential-energy motion.

    ``general_features``: the model's features of a general data set (the paper: ImageNet val)
    whose mean/std rescale the motion; None uses the probe's own. ``max_dim=None`` (default
    here) scores the raw moved features as the reference does.
    """
    _check_max_dim(max_dim)
    moved, _ = ped_motion(features, labels, general_features=general_features, time_step=time_step,
                          nsigma=nsigma, exit_ratio=exit_ratio, constant=constant, eps=eps, max_steps=max_steps)
    return _score_moved(moved, check_labels(labels, n_samples=moved.shape[0]), score_with, max_dim)


@register
class PED(TransferabilityEstimator):
    """PED as a registered estimator: SFDA (or ``score_with``) after the potential-energy motion.

    Rescales with the probe's own statistics (see the module docstring); ``max_dim`` defaults
    to ``"auto"`` like the registered SFDA.
    """

    name = "ped"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, score_with: str = "sfda", max_dim: int | str | None = "auto",
                 time_step: float = DEFAULT_TIME_STEP, nsigma: float = DEFAULT_NSIGMA,
                 exit_ratio: float = DEFAULT_EXIT_RATIO, constant: float = DEFAULT_CONSTANT,
                 eps: float = DEFAULT_EPS, max_steps: int = DEFAULT_MAX_STEPS):
        _check_params(time_step, nsigma, exit_ratio, constant, eps, max_steps)
        if not isinstance(score_with, str) or score_with.strip().lower() == self.name:
            raise ValueError(f"score_with must name another registered estimator; got {score_with!r}")
        _check_max_dim(max_dim)
        _final_estimator(score_with)  # unknown names and unusable estimators fail here
        self.score_with = score_with
        self.max_dim = max_dim
        self.time_step = time_step
        self.nsigma = nsigma
        self.exit_ratio = exit_ratio
        self.constant = constant
        self.eps = eps
        self.max_steps = max_steps

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        moved, _ = _motion_from_checked(features, labels, _rescaling(features, None, self.eps), self.time_step,
                                        self.nsigma, self.exit_ratio, self.constant, self.max_steps)
        return _score_moved(moved, labels, self.score_with, self.max_dim)
